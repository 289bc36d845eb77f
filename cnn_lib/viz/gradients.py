"""Figures for the lessons: gradients (filled in by the lesson that needs it)."""
