-- A record whose answer is a certificate (an identity renewal, later an
-- enrollment) remembers it, so a redelivered record gets the same answer
-- again instead of nothing (the first reply may never have arrived).
ALTER TABLE sync_records ADD COLUMN result_serial text;
