-- The id the chat service gives each message it accepts (queue message version 2). The writer
-- stores it with the row, so a second message for an existing (chat_id, number) is told apart:
-- the same id is a redelivery (acknowledged), another id — or a row stored without one — is a
-- conflict the writer dead-letters and counts instead of skipping it silently.
-- Nullable: rows written before version 2 have none. Adding a nullable column without a default
-- rewrites nothing (a catalog change under a brief ACCESS EXCLUSIVE lock).
ALTER TABLE chat_messages ADD COLUMN IF NOT EXISTS message_id UUID;
