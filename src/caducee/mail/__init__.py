"""Mail transport: SMTP submission, IMAP and Maildir mailboxes, the embedded mail service."""
