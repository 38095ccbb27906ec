"""Deployment formats of a trained BriVL (`wenlan export ...`)."""
