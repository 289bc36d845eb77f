"""Figures for the lessons: dense (filled in by the lesson that needs it)."""
