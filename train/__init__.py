"""Cross-lingual (CoIT) and multilingual (MuIT) instruction tuning, and evaluation."""
