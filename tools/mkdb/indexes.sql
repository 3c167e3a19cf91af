-- Built after the data is in: one pass each instead of an index update per row.
CREATE INDEX orders_by_user ON orders(user_id, created_at DESC);
CREATE INDEX notifications_unread ON notifications(user_id, read, created_at DESC);
CREATE INDEX products_by_category ON products(category, popularity DESC);
