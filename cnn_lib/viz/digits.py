"""Figures for the lessons: digits (filled in by the lesson that needs it)."""
