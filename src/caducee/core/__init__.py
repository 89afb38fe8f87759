"""Sans-I/O core: MIME and CMS building and parsing, algorithm choice, verification results.

Bytes and values in, bytes and values out. Nothing here opens a socket, a file, a card or a
database, nor reads the clock or randomness except through what the caller passes in
(``tests/unit/test_layering.py`` checks the imports).
"""
