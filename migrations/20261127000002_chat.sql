-- The Chat API (S4): users own applications, applications have numbered chats, chats have numbered
-- messages. The chat service writes users, applications and chats synchronously; messages arrive
-- through RabbitMQ and are inserted in batches by the writer.

CREATE TABLE chat_users (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      TEXT NOT NULL,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- E-mail addresses are unique whatever their case: "A@x.io" and "a@x.io" are one user.
CREATE UNIQUE INDEX chat_users_email ON chat_users (lower(email));

CREATE TABLE applications (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token       TEXT NOT NULL UNIQUE,
    owner_id    BIGINT NOT NULL REFERENCES chat_users (id),
    name        TEXT NOT NULL,
    chats_count INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX applications_owner ON applications (owner_id, id);

CREATE TABLE chats (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    application_id BIGINT NOT NULL REFERENCES applications (id),
    number         INTEGER NOT NULL CHECK (number > 0),
    -- Maintained by the writer, in the transaction that inserts the rows it counts.
    messages_count BIGINT NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The safety net under Redis numbering: a number is never given to two chats.
    UNIQUE (application_id, number)
);

-- The message-number counter of each chat, apart from `chats` so that allocating a number (chat
-- service) never waits on the row lock the writer takes to bump `messages_count`. A number is
-- allocated here before its message is published, so the counter covers every accepted message,
-- also those still in the queue.
CREATE TABLE chat_message_numbers (
    chat_id     BIGINT PRIMARY KEY REFERENCES chats (id),
    last_number INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE chat_messages (
    chat_id    BIGINT NOT NULL REFERENCES chats (id),
    number     INTEGER NOT NULL CHECK (number > 0),
    body       TEXT NOT NULL,
    -- When the chat service accepted it (the 202); written_at - created_at is the queue's lag.
    created_at TIMESTAMPTZ NOT NULL,
    written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    search     TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', body)) STORED,
    -- One row per accepted message: a redelivered message hits this and is skipped.
    PRIMARY KEY (chat_id, number)
);
CREATE INDEX chat_messages_search ON chat_messages USING GIN (search);
