"""Old Faithful CAR archives: byte ranges, the section format, transaction metadata, the reader and the source."""
