# Sourced by scripts/test: the database servers the authentication tests talk to, installed and
# started when missing, configured as these machines ship them (PostgreSQL trust on 127.0.0.1,
# MariaDB root without a password on 127.0.0.1, Redis on 6379). Each wait is bounded.

wait_for() {  # wait_for DESCRIPTION COMMAND...: up to 60 s
    local what="$1"; shift
    for _ in $(seq 1 120); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "$what did not come up within 60 s" >&2
    return 1
}

ensure_postgresql() {
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "installing postgresql (authentication backend tests)" >&2
        apt_install postgresql
    fi
    local version; version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
        echo "PostgreSQL: trust for local TCP connections (test machine)" >&2
        as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        pg_lsclusters | grep -q online && as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
    pg_lsclusters | grep -q online || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
}

ensure_mariadb() {
    if [ ! -x /usr/sbin/mariadbd ]; then
        echo "installing mariadb-server (authentication backend tests)" >&2
        apt_install mariadb-server mariadb-client
    fi
    if ! mysqladmin ping >/dev/null 2>&1; then
        as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld
        as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
        wait_for MariaDB mysqladmin ping
    fi
    if ! mysql -h 127.0.0.1 -u root -e "SELECT 1" >/dev/null 2>&1; then
        echo "MariaDB: root without a password on 127.0.0.1 (test machine)" >&2
        mysql -u root -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
            GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;"
    fi
    wait_for "MariaDB on 127.0.0.1" mysql -h 127.0.0.1 -u root -e "SELECT 1"
}

ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "installing redis-server (authentication backend tests)" >&2
        apt_install redis-server
    fi
    if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
        as_root mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
    fi
    wait_for Redis redis-cli -h 127.0.0.1 ping
}
