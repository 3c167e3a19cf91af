-- The sample data, deterministic: rnd(stream, n) is a hash of (seed, stream, n), so the same
-- seed and size give the same rows. :users is the number of users.
CREATE TEMP TABLE first_names (i INTEGER PRIMARY KEY, name TEXT);
INSERT INTO first_names (name) VALUES ('Alice'), ('Bob'), ('Chloé'), ('Dmitri'), ('Emma'),
  ('François'), ('Grace'), ('Hiroshi'), ('Inès'), ('José'), ('Kai'), ('Łukasz'), ('Maya'),
  ('Noor'), ('Olivia'), ('Pedro'), ('Quinn'), ('Søren'), ('Zoë'), ('渡辺');
CREATE TEMP TABLE last_names (i INTEGER PRIMARY KEY, name TEXT);
INSERT INTO last_names (name) VALUES ('Smith'), ('García'), ('Müller'), ('Rossi'), ('Dubois'),
  ('Kowalski'), ('Nguyen'), ('Okafor'), ('Johansson'), ('Tanaka'), ('Silva'), ('Novák');
CREATE TEMP TABLE categories (i INTEGER PRIMARY KEY, name TEXT);
INSERT INTO categories (name) VALUES ('books'), ('music'), ('games'), ('garden'), ('kitchen'),
  ('toys'), ('sports'), ('outdoor'), ('fashion'), ('shoes'), ('beauty'), ('health'),
  ('office'), ('pets'), ('baby'), ('tools'), ('auto'), ('phones'), ('computers'), ('cameras');
CREATE TEMP TABLE countries (i INTEGER PRIMARY KEY, code TEXT);
INSERT INTO countries (code) VALUES ('FR'), ('DE'), ('US'), ('GB'), ('JP'), ('BR'), ('PL'),
  ('IN'), ('NG'), ('SE');
CREATE TEMP TABLE seq (i INTEGER PRIMARY KEY);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < max(:users, 10000))
INSERT INTO seq SELECT i FROM n;

INSERT INTO users (id, name, email, country, favorite_category, created_at)
SELECT s.i,
       (SELECT name FROM first_names WHERE i = 1 + rnd(1, s.i) % 20) || ' ' ||
       (SELECT name FROM last_names WHERE i = 1 + rnd(2, s.i) % 12),
       'user' || s.i || '@example.com',
       (SELECT code FROM countries WHERE i = 1 + rnd(3, s.i) % 10),
       (SELECT name FROM categories WHERE i = 1 + rnd(4, s.i) % 20),
       1600000000 + rnd(5, s.i) % 100000000
FROM seq s WHERE s.i <= :users;

INSERT INTO accounts (user_id, plan, balance_cents, currency, status, avatar, referral_code)
SELECT id,
       CASE rnd(6, id) % 4 WHEN 0 THEN 'free' WHEN 1 THEN 'plus' WHEN 2 THEN 'pro' ELSE 'team' END,
       rnd(7, id) % 1000000 - 50000,
       CASE country WHEN 'US' THEN 'USD' WHEN 'GB' THEN 'GBP' WHEN 'JP' THEN 'JPY' ELSE 'EUR' END,
       CASE WHEN rnd(8, id) % 50 = 0 THEN 'suspended' ELSE 'active' END,
       CASE WHEN rnd(9, id) % 3 = 0 THEN NULL
            ELSE randomblob_det(rnd(10, id), 16 + rnd(11, id) % 48) END,
       CASE WHEN rnd(12, id) % 4 = 0 THEN NULL ELSE printf('REF%06X', rnd(13, id) % 16777216) END
FROM users;

-- About ten orders per user (0 to 20), newest within the last year of the data.
INSERT INTO orders (user_id, created_at, total_cents, status, discount)
SELECT u.id, 1690000000 + rnd(14, u.id * 32 + k.i) % 31536000,
       100 + rnd(15, u.id * 32 + k.i) % 50000,
       CASE rnd(16, u.id * 32 + k.i) % 5 WHEN 0 THEN 'pending' WHEN 1 THEN 'shipped'
            WHEN 2 THEN 'cancelled' ELSE 'delivered' END,
       CASE WHEN rnd(17, u.id * 32 + k.i) % 4 = 0 THEN (rnd(18, u.id * 32 + k.i) % 30) / 100.0
            ELSE NULL END
FROM users u JOIN seq k ON k.i <= rnd(19, u.id) % 21;

-- About twelve notifications per user (0 to 24), a third of them unread.
INSERT INTO notifications (user_id, created_at, kind, body, read)
SELECT u.id, 1690000000 + rnd(20, u.id * 32 + k.i) % 31536000,
       CASE rnd(21, u.id * 32 + k.i) % 4 WHEN 0 THEN 'order' WHEN 1 THEN 'promo'
            WHEN 2 THEN 'security' ELSE 'social' END,
       printf('Notification %d for user %d', k.i, u.id),
       rnd(22, u.id * 32 + k.i) % 3 <> 0
FROM users u JOIN seq k ON k.i <= rnd(23, u.id) % 25;

INSERT INTO roles (id, name) VALUES (1, 'customer'), (2, 'seller'), (3, 'support'),
  (4, 'moderator'), (5, 'admin');
INSERT INTO permissions (id, name)
SELECT i, 'perm.' || (SELECT name FROM categories WHERE categories.i = seq.i)
FROM seq WHERE i <= 20;
INSERT INTO role_permissions (role_id, permission_id)
SELECT r.id, p.id FROM roles r JOIN permissions p ON rnd(24, r.id * 100 + p.id) % 5 < r.id;
-- Every user is a customer; some have one or two more roles.
INSERT INTO user_roles (user_id, role_id) SELECT id, 1 FROM users;
INSERT OR IGNORE INTO user_roles (user_id, role_id)
SELECT id, 2 + rnd(25, id) % 4 FROM users WHERE rnd(26, id) % 3 = 0;
INSERT OR IGNORE INTO user_roles (user_id, role_id)
SELECT id, 2 + rnd(27, id) % 4 FROM users WHERE rnd(28, id) % 10 = 0;

INSERT INTO products (id, name, category, price_cents, popularity)
SELECT i, 'Product ' || i, (SELECT name FROM categories WHERE categories.i = 1 + rnd(29, seq.i) % 20),
       99 + rnd(30, i) % 100000, rnd(31, i) % 1000000
FROM seq WHERE i <= 10000;
