"""Figures for the lessons: conv_forward (filled in by the lesson that needs it)."""
