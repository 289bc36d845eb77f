"""Figures for the lessons: conv_backward (filled in by the lesson that needs it)."""
