# Sourced by scripts/test: the servers the integration tests talk to (databases, RabbitMQ), installed and
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

tcp_open() {  # tcp_open PORT: something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ensure_rabbitmq_mqtt() {
    # RabbitMQ's MQTT plugin on 127.0.0.1:$OCPPGW_TEST_RABBITMQ_MQTT_PORT (1884: Mosquitto may hold
    # 1883), the vhost ocppgw-tests for guest (tests/integration/brokers.py). The listener is read
    # from rabbitmq.conf at boot only, so a running node without it is restarted once.
    local port="${OCPPGW_TEST_RABBITMQ_MQTT_PORT:-1884}" conf=/etc/rabbitmq/rabbitmq.conf
    if [ ! -x /usr/sbin/rabbitmq-server ]; then
        echo "installing rabbitmq-server (the gateway suite also runs on its MQTT plugin)" >&2
        apt_install rabbitmq-server
    fi
    if ! grep -qxE "mqtt\.listeners\.tcp\.default *= *127\.0\.0\.1:$port" "$conf" 2>/dev/null; then
        echo "RabbitMQ: MQTT listener on 127.0.0.1:$port in $conf" >&2
        if [ -f "$conf" ]; then as_root sed -i '/^mqtt\.listeners\.tcp\./d' "$conf"; fi
        echo "mqtt.listeners.tcp.default = 127.0.0.1:$port" | as_root tee -a "$conf" >/dev/null
    fi
    as_root rabbitmq-plugins enable --offline rabbitmq_mqtt >/dev/null
    if ! tcp_open "$port"; then
        if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
            echo "RabbitMQ: restarting the node for its MQTT listener" >&2
            as_root rabbitmqctl -q stop >/dev/null
        fi
        as_root rabbitmq-server -detached
        wait_for "RabbitMQ's MQTT listener on $port" tcp_open "$port"
    fi
    wait_for RabbitMQ rabbitmqctl -q await_startup
    if ! rabbitmqctl -q list_vhosts | grep -qx ocppgw-tests; then
        as_root rabbitmqctl -q add_vhost ocppgw-tests
    fi
    as_root rabbitmqctl -q set_permissions -p ocppgw-tests guest '.*' '.*' '.*'
}
