"""replicate_magic: stream replies from models hosted on Replicate into Jupyter."""
