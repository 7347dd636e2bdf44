"""Stage 1: NER-CoT synthesis (teacher clients, offline teacher, verification, judge, resumable runs)."""
