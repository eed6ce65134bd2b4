"""depth subpackage."""
