"""CMS structures (RFC 5652, 5083, 5084, 5753) built and parsed with asn1crypto."""
