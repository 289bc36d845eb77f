"""Figures for the lessons: pooling (filled in by the lesson that needs it)."""
