"""MIME for S/MIME: canonical form, multipart/signed, application/pkcs7-mime, header protection."""
