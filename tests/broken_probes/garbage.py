"""A probe whose output is not JSON."""
print("this is not a JSON document")
