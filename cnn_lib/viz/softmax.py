"""Figures for the lessons: softmax (filled in by the lesson that needs it)."""
