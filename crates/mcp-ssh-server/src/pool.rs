//! The SSH connection pool, keyed by `user@host:port`.
//!
//! `acquire` hands out an idle authenticated connection when one exists (a hit), otherwise it
//! reserves a slot and connects (a miss and a create). Limits are checked *before* connecting:
//! a per-target limit and a global one, with a bounded wait for a slot to free up, then a clear
//! error. A [`Lease`] returns its connection when dropped, so no code path can leak a slot;
//! a lease marked broken (or whose connection closed) is discarded instead of pooled.
//!
//! Idle connections are only reused with the same credentials: the pool key shown to users is
//! `user@host:port`, but idle entries also carry a keyed hash of the secret, so a client can
//! never borrow a connection that another client authenticated with a password it doesn't know.
//!
//! A slot reserved for a connection being made is a `Reservation`, released on drop: when the
//! HTTP client goes away, hyper drops the handler's future mid-connect, and the slot comes back
//! (it used to stay counted as `connecting` forever). The pool makes connections through a
//! [`Connector`], so its bookkeeping is unit-tested without sshd; the server's is
//! [`SshConnector`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::ssh::{ConnectOptions, Connection, Credentials, SshError, Target};

/// What the pool needs of a connection.
pub trait PoolConn: Send + Sync + 'static {
    /// Whether its transport has ended.
    fn is_closed(&self) -> bool;
    /// A cheap end-to-end probe, `false` when it fails or takes longer than `timeout`.
    fn check_alive(&self, timeout: Duration) -> impl Future<Output = bool> + Send;
    /// Closes it politely; never fails.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// Makes connections for the pool: the seam between its bookkeeping and SSH.
pub trait Connector: Send + Sync + 'static {
    /// The connection it makes.
    type Conn: PoolConn;
    /// Connects and authenticates.
    fn connect(
        &self,
        target: &Target,
        auth: &Credentials,
        opts: &ConnectOptions,
    ) -> impl Future<Output = Result<Self::Conn, SshError>> + Send;
}

/// The server's connector: [`Connection::connect_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SshConnector;

impl Connector for SshConnector {
    type Conn = Connection;
    fn connect(
        &self,
        target: &Target,
        auth: &Credentials,
        opts: &ConnectOptions,
    ) -> impl Future<Output = Result<Connection, SshError>> + Send {
        Connection::connect_with(target, auth, opts)
    }
}

impl PoolConn for Connection {
    fn is_closed(&self) -> bool {
        Connection::is_closed(self)
    }
    fn check_alive(&self, timeout: Duration) -> impl Future<Output = bool> + Send {
        Connection::check_alive(self, timeout)
    }
    fn close(&self) -> impl Future<Output = ()> + Send {
        Connection::close(self)
    }
}

/// Pool limits.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Connections (idle + in use + connecting) per `user@host:port`.
    pub max_per_target: usize,
    /// Connections in total.
    pub max_total: usize,
    /// How long `acquire` waits for a slot before giving up.
    pub wait: Duration,
    /// Idle connections older than this are closed by [`Pool::maintain`].
    pub idle_timeout: Duration,
    /// Timeout of one health probe.
    pub health_timeout: Duration,
    /// An idle connection unused for this long is probed before it is handed out again (a
    /// connection that froze while idle would otherwise be handed out until the next health
    /// check, up to the check interval plus its timeout).
    pub revalidate_after: Duration,
}

/// The longest the probe of an idle connection about to be handed out may take.
const REVALIDATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why `acquire` failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No slot freed up within the wait.
    #[error("pool exhausted for {key} ({in_use}/{max})")]
    Exhausted {
        /// The target.
        key: PoolKey,
        /// Connections counted against the limit that was hit.
        in_use: usize,
        /// That limit.
        max: usize,
    },
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] SshError),
}

/// `user@host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Login user.
    pub user: String,
    /// Host name or address, as the client gave it.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

impl From<&Target> for PoolKey {
    fn from(t: &Target) -> Self {
        Self {
            user: t.user.clone(),
            host: t.host.clone(),
            port: t.port,
        }
    }
}

/// Whether a connection may come from, and go back to, the idle list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// An idle connection with the same credentials when there is one; back to the pool after.
    #[default]
    Pooled,
    /// Always a new connection, closed when its lease ends (never pooled): what a caller asks
    /// for to measure or test connection setup itself. It still takes a slot of the target's
    /// limit; an idle connection (of any credentials) gives its slot up for it.
    Dedicated,
}

/// Counts of one target's connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TargetStats {
    /// Idle, ready for reuse.
    pub idle: usize,
    /// Leased to SSH sessions.
    pub active: usize,
    /// Being established.
    pub connecting: usize,
}

struct IdleConn<T> {
    conn: Arc<T>,
    auth_tag: u64,
    since: Instant,
}

struct TargetState<T> {
    idle: VecDeque<IdleConn<T>>,
    active: usize,
    connecting: usize,
}

impl<T> Default for TargetState<T> {
    fn default() -> Self {
        Self {
            idle: VecDeque::new(),
            active: 0,
            connecting: 0,
        }
    }
}

impl<T> TargetState<T> {
    fn count(&self) -> usize {
        self.idle.len() + self.active + self.connecting
    }
}

struct State<T> {
    targets: HashMap<PoolKey, TargetState<T>>,
    total: usize,
}

impl<T> Default for State<T> {
    fn default() -> Self {
        Self {
            targets: HashMap::new(),
            total: 0,
        }
    }
}

struct Inner<C: Connector> {
    state: Mutex<State<C::Conn>>,
    released: Notify,
    limits: PoolLimits,
    metrics: Metrics,
    hasher: RandomState,
    connector: C,
}

/// The connection pool. Cheap to clone.
pub struct Pool<C: Connector = SshConnector> {
    inner: Arc<Inner<C>>,
}

impl<C: Connector> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Connector> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// A connection taken from the pool; returned to it on drop.
pub struct Lease<C: Connector = SshConnector> {
    conn: Arc<C::Conn>,
    key: PoolKey,
    auth_tag: u64,
    hit: bool,
    broken: AtomicBool,
    reuse: Reuse,
    pool: Weak<Inner<C>>,
}

impl<C: Connector> fmt::Debug for Lease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("hit", &self.hit)
            .finish_non_exhaustive()
    }
}

impl<C: Connector> Lease<C> {
    /// The connection.
    pub fn conn(&self) -> &Arc<C::Conn> {
        &self.conn
    }
    /// Whether it came from the idle list.
    pub fn was_hit(&self) -> bool {
        self.hit
    }
    /// The pool key.
    pub fn key(&self) -> &PoolKey {
        &self.key
    }
    /// Don't pool this connection again (it failed mid-use).
    pub fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }

    /// Whether it is marked broken.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Whether its connection goes back to the idle list when the lease ends (it is not broken,
    /// not closed, and not a dedicated one).
    pub fn will_pool(&self) -> bool {
        !self.is_broken() && !self.conn.is_closed() && self.reuse == Reuse::Pooled
    }
}

impl<C: Connector> Drop for Lease<C> {
    fn drop(&mut self) {
        if let Some(inner) = self.pool.upgrade() {
            inner.release(
                &self.key,
                self.auth_tag,
                self.conn.clone(),
                self.will_pool(),
            );
        }
    }
}

enum Step<T> {
    /// An idle connection, and how long it was idle.
    Hit(Arc<T>, Duration),
    Connect,
    Wait {
        in_use: usize,
        max: usize,
    },
}

/// A slot [`Inner::step`] reserved (`connecting`, `total`) for a connection being made. It
/// becomes an active slot with [`Reservation::fulfil`]; dropped without that (the connect failed,
/// or `acquire`'s future was dropped mid-connect), it gives the slot back and wakes waiters.
struct Reservation<'a, C: Connector> {
    inner: &'a Inner<C>,
    key: PoolKey,
    fulfilled: bool,
}

impl<C: Connector> Reservation<'_, C> {
    fn fulfil(mut self) {
        let mut st = self.inner.lock();
        let ts = st.targets.entry(self.key.clone()).or_default();
        ts.connecting = ts.connecting.saturating_sub(1);
        ts.active += 1;
        self.inner.publish(&st);
        self.fulfilled = true;
    }
}

impl<C: Connector> Drop for Reservation<'_, C> {
    fn drop(&mut self) {
        if self.fulfilled {
            return;
        }
        {
            let mut st = self.inner.lock();
            if let Some(ts) = st.targets.get_mut(&self.key) {
                ts.connecting = ts.connecting.saturating_sub(1);
            }
            st.total = st.total.saturating_sub(1);
            st.forget_if_empty(&self.key);
            self.inner.publish(&st);
        }
        self.inner.released.notify_waiters();
    }
}

impl Pool<SshConnector> {
    /// An empty pool of SSH connections.
    pub fn new(limits: PoolLimits, metrics: Metrics) -> Self {
        Self::with_connector(SshConnector, limits, metrics)
    }
}

impl<C: Connector> Pool<C> {
    /// An empty pool whose connections `connector` makes.
    pub fn with_connector(connector: C, limits: PoolLimits, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                released: Notify::new(),
                limits,
                metrics,
                hasher: RandomState::new(),
                connector,
            }),
        }
    }

    /// Take a connection for `target`: an idle one with the same credentials, or a new one.
    pub async fn acquire(
        &self,
        target: &Target,
        auth: &Credentials,
        opts: &ConnectOptions,
    ) -> Result<Lease<C>, PoolError> {
        self.acquire_with(target, auth, opts, Reuse::Pooled).await
    }

    /// Take a connection for `target` as `reuse` says.
    pub async fn acquire_with(
        &self,
        target: &Target,
        auth: &Credentials,
        opts: &ConnectOptions,
        reuse: Reuse,
    ) -> Result<Lease<C>, PoolError> {
        let key = PoolKey::from(target);
        let auth_tag = self.inner.auth_tag(auth);
        let deadline = tokio::time::Instant::now() + self.inner.limits.wait;
        loop {
            // Created before looking at the state, so a release between the look and the
            // wait still wakes us (notify_waiters reaches every future created before it).
            let released = self.inner.released.notified();
            let step = self.inner.step(&key, auth_tag, reuse);
            match step {
                Step::Hit(conn, idle) => {
                    // Leased before the probe, so a caller that goes away meanwhile gives the
                    // slot back.
                    let lease = self.lease(conn, key.clone(), auth_tag, true, reuse);
                    if idle >= self.inner.limits.revalidate_after
                        && !lease.conn.check_alive(self.revalidate_timeout()).await
                    {
                        // It froze or died while idle: closed, and its slot given back.
                        lease.mark_broken();
                        self.inner.metrics.pool_health_fails.inc();
                        tracing::info!(target = %key, "an idle pooled connection failed its probe; not reused");
                        continue;
                    }
                    self.inner.metrics.pool_hits.inc();
                    return Ok(lease);
                }
                Step::Connect => break,
                Step::Wait { in_use, max } => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        self.inner.metrics.pool_exhausted.inc();
                        return Err(PoolError::Exhausted { key, in_use, max });
                    }
                }
            }
        }
        self.inner.metrics.pool_misses.inc();
        let reservation = Reservation {
            inner: &self.inner,
            key: key.clone(),
            fulfilled: false,
        };
        // Dropped here (failure) or with this future (cancellation): the slot comes back.
        let conn = self.inner.connector.connect(target, auth, opts).await?;
        self.inner.metrics.pool_creates.inc();
        reservation.fulfil();
        Ok(self.lease(Arc::new(conn), key, auth_tag, false, reuse))
    }

    fn lease(
        &self,
        conn: Arc<C::Conn>,
        key: PoolKey,
        auth_tag: u64,
        hit: bool,
        reuse: Reuse,
    ) -> Lease<C> {
        Lease {
            conn,
            key,
            auth_tag,
            hit,
            broken: AtomicBool::new(false),
            reuse,
            pool: Arc::downgrade(&self.inner),
        }
    }

    fn revalidate_timeout(&self) -> Duration {
        self.inner.limits.health_timeout.min(REVALIDATE_TIMEOUT)
    }

    /// Per-target counts, sorted by key.
    pub fn stats(&self) -> Vec<(PoolKey, TargetStats)> {
        let st = self.inner.lock();
        let mut v: Vec<_> = st
            .targets
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    TargetStats {
                        idle: t.idle.len(),
                        active: t.active,
                        connecting: t.connecting,
                    },
                )
            })
            .collect();
        v.sort_by_key(|a| a.0.to_string());
        v
    }

    /// The limits.
    pub fn limits(&self) -> &PoolLimits {
        &self.inner.limits
    }

    /// One maintenance pass: close idle connections past the idle timeout, then probe the rest
    /// and evict those that fail (counted in `mcp_pool_health_fails_total`).
    pub async fn maintain(&self) {
        let now = Instant::now();
        let timeout = self.inner.limits.idle_timeout;
        let mut expired = Vec::new();
        let mut dead = Vec::new();
        let mut to_probe = Vec::new();
        {
            let mut st = self.inner.lock();
            for ts in st.targets.values_mut() {
                // A connection whose transport already closed failed its health without a probe.
                for i in ts.idle.drain(..).collect::<Vec<_>>() {
                    if i.conn.is_closed() {
                        dead.push(i.conn);
                    } else if now.duration_since(i.since) >= timeout {
                        expired.push(i.conn);
                    } else {
                        to_probe.push(i.conn.clone());
                        ts.idle.push_back(i);
                    }
                }
            }
            st.total -= expired.len() + dead.len();
            st.targets.retain(|_, t| t.count() > 0);
            self.inner.publish(&st);
        }
        let probe_timeout = self.inner.limits.health_timeout;
        let probes = to_probe.into_iter().map(|conn| async move {
            let alive = conn.check_alive(probe_timeout).await;
            (conn, alive)
        });
        let failed: Vec<_> = join_all(probes)
            .await
            .into_iter()
            .filter_map(|(c, alive)| (!alive).then_some(c))
            .collect();
        if !failed.is_empty() {
            let mut st = self.inner.lock();
            let mut evicted = Vec::new();
            for ts in st.targets.values_mut() {
                ts.idle.retain(|i| {
                    let bad = failed.iter().any(|d| Arc::ptr_eq(d, &i.conn));
                    if bad {
                        evicted.push(i.conn.clone());
                    }
                    !bad
                });
            }
            st.total -= evicted.len();
            st.targets.retain(|_, t| t.count() > 0);
            self.inner.publish(&st);
            dead.extend(evicted);
        }
        if expired.is_empty() && dead.is_empty() {
            return;
        }
        self.inner.metrics.pool_expires.inc_by(expired.len() as u64);
        self.inner
            .metrics
            .pool_health_fails
            .inc_by(dead.len() as u64);
        self.inner.released.notify_waiters();
        close_later(expired.into_iter().chain(dead).collect());
    }

    /// Close every idle connection, all at once (at shutdown; leased ones are closed by their
    /// sessions).
    pub async fn close_idle(&self) {
        let conns: Vec<_> = {
            let mut st = self.inner.lock();
            let mut all = Vec::new();
            for ts in st.targets.values_mut() {
                all.extend(ts.idle.drain(..).map(|i| i.conn));
            }
            st.total -= all.len();
            st.targets.retain(|_, t| t.count() > 0);
            self.inner.publish(&st);
            all
        };
        join_all(conns.into_iter().map(|c| async move { c.close().await })).await;
    }
}

/// Await futures concurrently (a tiny join_all, to avoid a dependency for one call).
async fn join_all<F: std::future::Future + Send + 'static>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn(f);
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(v) = r {
            out.push(v);
        }
    }
    out
}

impl<T> State<T> {
    fn forget_if_empty(&mut self, key: &PoolKey) {
        if self.targets.get(key).is_some_and(|t| t.count() == 0) {
            self.targets.remove(key);
        }
    }

    /// Close the oldest idle connection of any target but `except`, to make room globally.
    fn evict_oldest_idle(&mut self) -> Option<Arc<T>> {
        let (key, _) = self
            .targets
            .iter()
            .filter_map(|(k, t)| t.idle.front().map(|i| (k.clone(), i.since)))
            .min_by_key(|(_, since)| *since)?;
        let ts = self.targets.get_mut(&key)?;
        let victim = ts.idle.pop_front()?;
        self.total -= 1;
        self.forget_if_empty(&key);
        Some(victim.conn)
    }
}

impl<C: Connector> Inner<C> {
    fn lock(&self) -> MutexGuard<'_, State<C::Conn>> {
        // A panic while holding this lock leaves counts that are still consistent enough to
        // keep serving; don't turn one bug into a dead server.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Which credentials a connection was made with: a keyed hash of the password, or of the
    /// key's public half (whoever decoded the private key holds it).
    fn auth_tag(&self, auth: &Credentials) -> u64 {
        match auth {
            Credentials::Password(p) => self.hasher.hash_one(("password", p)),
            Credentials::Key(k) => self.hasher.hash_one(("key", k.public_key().key_data())),
        }
    }

    /// Decide, under the lock, what `acquire` does next; reserves a slot for `Connect`.
    fn step(&self, key: &PoolKey, auth_tag: u64, reuse: Reuse) -> Step<C::Conn> {
        let mut st = self.lock();
        let limits = &self.limits;
        let mut closed = 0;
        let mut evicted = Vec::new();
        let ts = st.targets.entry(key.clone()).or_default();
        // Most recently used first: it is the likeliest to still be alive.
        while reuse == Reuse::Pooled
            && let Some(pos) = ts.idle.iter().rposition(|i| i.auth_tag == auth_tag)
        {
            let Some(idle) = ts.idle.remove(pos) else {
                break;
            };
            if idle.conn.is_closed() {
                closed += 1;
                continue;
            }
            ts.active += 1;
            st.total -= closed;
            self.publish(&st);
            return Step::Hit(idle.conn, idle.since.elapsed());
        }
        // A slot held by an idle connection with other credentials may be reclaimed (with any
        // credentials, for a dedicated connection, which never takes an idle one).
        if ts.count() >= limits.max_per_target
            && let Some(pos) = ts
                .idle
                .iter()
                .position(|i| reuse == Reuse::Dedicated || i.auth_tag != auth_tag)
            && let Some(victim) = ts.idle.remove(pos)
        {
            evicted.push(victim.conn);
            closed += 1;
        }
        let in_target = ts.count();
        st.total -= closed;
        if in_target >= limits.max_per_target {
            self.publish(&st);
            close_later(evicted);
            return Step::Wait {
                in_use: in_target,
                max: limits.max_per_target,
            };
        }
        if st.total >= limits.max_total {
            match st.evict_oldest_idle() {
                Some(c) => evicted.push(c),
                None => {
                    let total = st.total;
                    self.publish(&st);
                    close_later(evicted);
                    return Step::Wait {
                        in_use: total,
                        max: limits.max_total,
                    };
                }
            }
        }
        st.targets.entry(key.clone()).or_default().connecting += 1;
        st.total += 1;
        self.publish(&st);
        close_later(evicted);
        Step::Connect
    }

    fn release(&self, key: &PoolKey, auth_tag: u64, conn: Arc<C::Conn>, healthy: bool) {
        {
            let mut st = self.lock();
            let Some(ts) = st.targets.get_mut(key) else {
                return;
            };
            ts.active = ts.active.saturating_sub(1);
            if healthy {
                ts.idle.push_back(IdleConn {
                    conn,
                    auth_tag,
                    since: Instant::now(),
                });
            } else {
                st.total -= 1;
                st.forget_if_empty(key);
                close_later(vec![conn]);
            }
            self.publish(&st);
        }
        self.released.notify_waiters();
    }

    fn publish(&self, st: &State<C::Conn>) {
        let (idle, active) = st.targets.values().fold((0, 0), |(i, a), t| {
            (i + t.idle.len(), a + t.active + t.connecting)
        });
        let g = &self.metrics.pool_connections;
        g.with_label_values(&["idle"]).set(idle as i64);
        g.with_label_values(&["active"]).set(active as i64);
    }
}

/// Close connections without blocking the caller (which may hold a lock or be in `Drop`).
fn close_later<T: PoolConn>(conns: Vec<Arc<T>>) {
    if conns.is_empty() {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            for c in conns {
                c.close().await;
            }
        });
    }
    // Outside a runtime the connections are simply dropped, which closes their sockets.
}

#[cfg(test)]
mod tests {
    //! The pool's state machine through a stand-in [`Connector`]: no SSH, only the bookkeeping.

    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::ssh::HostKeyPolicy;

    /// A connection that is alive until told otherwise (closed, or frozen: open but silent).
    #[derive(Default)]
    struct FakeConn {
        closed: AtomicBool,
        frozen: AtomicBool,
    }

    impl PoolConn for FakeConn {
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::Relaxed)
        }
        async fn check_alive(&self, _: Duration) -> bool {
            !self.is_closed() && !self.frozen.load(Ordering::Relaxed)
        }
        async fn close(&self) {
            self.closed.store(true, Ordering::Relaxed);
        }
    }

    /// Connects after `delay` (`None`: never), failing for the password "wrong".
    struct FakeConnector {
        delay: Option<Duration>,
        made: AtomicUsize,
    }

    impl Connector for FakeConnector {
        type Conn = FakeConn;
        async fn connect(
            &self,
            target: &Target,
            auth: &Credentials,
            _: &ConnectOptions,
        ) -> Result<FakeConn, SshError> {
            match self.delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
            if matches!(auth, Credentials::Password(p) if p == "wrong") {
                return Err(SshError::Refused {
                    addr: target.addr(),
                });
            }
            self.made.fetch_add(1, Ordering::Relaxed);
            Ok(FakeConn::default())
        }
    }

    fn pool(delay: Option<Duration>, per_target: usize, wait_ms: u64) -> Pool<FakeConnector> {
        Pool::with_connector(
            FakeConnector {
                delay,
                made: AtomicUsize::new(0),
            },
            PoolLimits {
                max_per_target: per_target,
                max_total: 100,
                wait: Duration::from_millis(wait_ms),
                idle_timeout: Duration::from_secs(60),
                health_timeout: Duration::from_secs(1),
                revalidate_after: Duration::from_millis(20),
            },
            Metrics::new(),
        )
    }

    fn target() -> Target {
        Target {
            host: "10.0.0.1".into(),
            port: 22,
            user: "u".into(),
        }
    }

    fn opts() -> ConnectOptions {
        ConnectOptions::new(HostKeyPolicy::Insecure)
    }

    fn pw(p: &str) -> Credentials {
        Credentials::Password(p.into())
    }

    fn made(p: &Pool<FakeConnector>) -> usize {
        p.inner.connector.made.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_cancelled_connect_gives_its_slot_back() {
        let p = pool(None, 1, 50);
        for _ in 0..10 {
            // The client goes away mid-connect: hyper drops the handler's future.
            let r = tokio::time::timeout(
                Duration::from_millis(20),
                p.acquire(&target(), &pw("x"), &opts()),
            )
            .await;
            assert!(r.is_err(), "the stand-in never connects");
        }
        assert!(p.stats().is_empty(), "{:?}", p.stats());
        assert_eq!(p.inner.lock().total, 0);
        // The next client gets a connect attempt, not "pool exhausted (1/1)".
        let r = tokio::time::timeout(
            Duration::from_millis(100),
            p.acquire(&target(), &pw("x"), &opts()),
        )
        .await;
        assert!(r.is_err(), "still connecting, not refused: {r:?}");
    }

    #[tokio::test]
    async fn a_failed_connect_gives_its_slot_back() {
        let p = pool(Some(Duration::ZERO), 1, 50);
        let e = p.acquire(&target(), &pw("wrong"), &opts()).await;
        assert!(matches!(e, Err(PoolError::Connect(_))), "{e:?}");
        assert!(p.stats().is_empty());
        let lease = p.acquire(&target(), &pw("x"), &opts()).await;
        assert!(lease.is_ok(), "{lease:?}");
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_a_release_and_gets_the_idle_connection() {
        let p = pool(Some(Duration::ZERO), 1, 2_000);
        let first = p.acquire(&target(), &pw("x"), &opts()).await.unwrap();
        let p2 = p.clone();
        let waiter = tokio::spawn(async move {
            p2.acquire(&target(), &pw("x"), &opts())
                .await
                .map(|l| l.was_hit())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "must wait while the only slot is leased"
        );
        drop(first);
        let hit = tokio::time::timeout(Duration::from_millis(500), waiter)
            .await
            .expect("woken well before the 2 s wait")
            .expect("task");
        assert!(matches!(hit, Ok(true)), "{hit:?}");
        assert_eq!(made(&p), 1);
    }

    #[tokio::test]
    async fn exhaustion_is_reported_after_the_wait() {
        let p = pool(Some(Duration::ZERO), 1, 30);
        let _held = p.acquire(&target(), &pw("x"), &opts()).await.unwrap();
        let e = p.acquire(&target(), &pw("x"), &opts()).await;
        assert!(
            matches!(
                e,
                Err(PoolError::Exhausted {
                    in_use: 1,
                    max: 1,
                    ..
                })
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn idle_connections_go_only_to_the_same_credentials() {
        let p = pool(Some(Duration::ZERO), 2, 50);
        drop(p.acquire(&target(), &pw("alice"), &opts()).await.unwrap());
        let other = p.acquire(&target(), &pw("mallory"), &opts()).await.unwrap();
        assert!(
            !other.was_hit(),
            "another password must not borrow alice's connection"
        );
        let again = p.acquire(&target(), &pw("alice"), &opts()).await.unwrap();
        assert!(again.was_hit());
        assert_eq!(made(&p), 2);
    }

    #[tokio::test]
    async fn a_dedicated_connection_is_always_new_and_never_pooled() {
        let p = pool(Some(Duration::ZERO), 1, 50);
        drop(p.acquire(&target(), &pw("x"), &opts()).await.unwrap());
        assert_eq!(p.stats()[0].1.idle, 1);
        // The idle connection gives its slot up: the target's limit is 1.
        let d = p
            .acquire_with(&target(), &pw("x"), &opts(), Reuse::Dedicated)
            .await
            .unwrap();
        assert!(!d.was_hit());
        assert_eq!(made(&p), 2);
        let conn = d.conn().clone();
        drop(d);
        assert!(p.stats().is_empty(), "not pooled: {:?}", p.stats());
        assert_eq!(p.inner.lock().total, 0);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(conn.is_closed(), "closed when its lease ended");
        let again = p.acquire(&target(), &pw("x"), &opts()).await.unwrap();
        assert!(!again.was_hit());
    }

    /// An idle connection that froze is probed before it is handed out again, and replaced;
    /// one reused at once is not probed (no round trip on a busy pool).
    #[tokio::test]
    async fn a_frozen_idle_connection_is_replaced_not_handed_out() {
        let p = pool(Some(Duration::ZERO), 1, 50);
        drop(p.acquire(&target(), &pw("x"), &opts()).await.unwrap());
        let again = p.acquire(&target(), &pw("x"), &opts()).await.unwrap();
        assert!(again.was_hit(), "reused at once");
        let frozen = again.conn().clone();
        drop(again);
        frozen.frozen.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let fresh = p.acquire(&target(), &pw("x"), &opts()).await.unwrap();
        assert!(!fresh.was_hit(), "the frozen connection was handed out");
        assert!(!Arc::ptr_eq(fresh.conn(), &frozen));
        assert_eq!(p.inner.metrics.pool_health_fails.get(), 1);
        assert_eq!(p.inner.lock().total, 1, "the frozen one gave its slot back");
    }

    #[tokio::test]
    async fn broken_and_dead_connections_are_not_pooled_and_maintain_evicts() {
        let p = pool(Some(Duration::ZERO), 2, 50);
        let a = p.acquire(&target(), &pw("x"), &opts()).await.unwrap();
        a.mark_broken();
        drop(a);
        assert!(p.stats().is_empty(), "a broken lease is discarded");
        let b = p.acquire(&target(), &pw("x"), &opts()).await.unwrap();
        let conn = b.conn().clone();
        drop(b);
        assert_eq!(p.stats()[0].1.idle, 1);
        conn.closed.store(true, Ordering::Relaxed);
        p.maintain().await;
        assert!(p.stats().is_empty(), "{:?}", p.stats());
        assert_eq!(p.inner.lock().total, 0);
    }
}
