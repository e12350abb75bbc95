-- Counters stop at 2^53 - 1 (MAX_COUNT). Before, a huge quantity could wrap a counter
-- or leave it negative (a u64 past 2^63 stored in a BIGINT): such a value stood for
-- more than the maximum, so it becomes the maximum.
UPDATE usage_counters SET value = 9007199254740991 WHERE value < 0 OR value > 9007199254740991;
