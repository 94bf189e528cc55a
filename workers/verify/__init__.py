"""`pidelta verify`: the tables against PI per tag and bucket, repaired and recorded."""
