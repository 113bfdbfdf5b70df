"""Batch jobs behind `ubi price ...` and `ubi features ...`: database in, database out."""
