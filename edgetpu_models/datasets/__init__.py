"""Image datasets that ship with the package (no download at run time); see README.md in this folder."""
