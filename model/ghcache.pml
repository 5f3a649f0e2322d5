/*
 * ghcache core: the lock protocol, as src/core/ implements it.
 * See model/README.md for how to run it, the properties and the
 * correspondence table (proctype / inline <-> Rust function <-> loom test).
 *
 * ONE file. What is checked is chosen with cpp macros:
 *   scenario  -DS_FLIGHT (default) | -DS_STALE | -DS_CACHE | -DS_P2P | -DS_NODE
 *   size      -DNC=<clients> (default 3), -DNOPS=<operations per client>
 *   LTL       -DLTL adds the ltl {} blocks (pan compiled without -DSAFETY,
 *             run with ./pan -a -N <name>)
 *   bugs      -DBUG_... : the known-bad variants (README lists them); each
 *             changes only the lines it names, so they cannot drift.
 *
 * Abstractions (each is safe for the properties checked):
 * - Keys: NK keys, key k lives in shard k (Cache::shard_index).
 * - An entry is present or absent; a lookup of a present entry finds it
 *   fresh, stale or expired nondeterministically (the Clock can be anywhere).
 * - Counters are the ones the properties are about: lookups and its three
 *   outcomes, coalesced, inserts, invalidations, expirations, and "events"
 *   (every Counters::record: api calls, fetch errors, peer hits, ...).
 * - Starter / fetch callbacks: nondeterministic success / failure /
 *   vanishing, and nondeterministically call back into the cache (stats,
 *   lookup), as the DESIGN's "callback calls stats()" trick does.
 * - A host is a ghost counter `hosts` (created by a successful starter,
 *   decremented by P2pHost::stop).
 * - The data behind key k (what GitHub or the owner peer answers) is a ghost
 *   version data[k]; a fill reads it with no lock held, an entry and a
 *   published outcome carry the version they were filled from.
 */

/* ------------------------------------------------------------------ sizes */
#ifndef NC
#define NC 3                /* concurrent clients (threads or tasks) */
#endif
#ifndef NOPS
#if defined(S_P2P)
#define NOPS 2              /* operations per client */
#else
#define NOPS 1
#endif
#endif
#define NSH 2               /* shards; key k lives in shard k */
#define NK NSH
#define LIFE NSH            /* the lifecycle lock comes after every shard */
#define NLK (NSH + 1)
#define MAXC 12             /* outcome cells (0 = none) */
#define MAXFAIL 2           /* LifecycleConfig::max_start_failures */

#if !defined(S_CACHE) && !defined(S_P2P) && !defined(S_NODE) && !defined(S_STALE)
#define S_FLIGHT 1
#endif

/* flight outcomes in an OutcomeCell (0 = not published) */
#define DONE_OK 1
#define DONE_ERR 2
#define ABANDONED 3
/* start outcomes */
#define O_RUNNING 1
#define O_FAILED 2
#define O_SHUTDOWN 3

/* P2P lifecycle states (lifecycle.rs State) */
#define L_DISABLED 0
#define L_IDLE 1
#define L_STARTING 2
#define L_RUNNING 3
#define L_BACKOFF 4
#define L_DEGRADED 5
#define L_STOPPING 6
#define L_STOPPED 7

/* ------------------------------------------------------------------ state */
/* shard and lifecycle locks: owner client id + 1, 0 = free */
byte lk[NLK];
byte held[NC];              /* bit i: the client holds lock i */
/* outcome cells: leaf locks */
byte clk[MAXC];
bool cheld[NC];
byte cval[MAXC];            /* the published value (0 = none) */
byte cv[MAXC];              /* condvar wait set: bit per client */
byte wk[MAXC];              /* registered wakers: bit per client */
bool woken[NC];             /* the client was notified / its waker woken */
byte ncell = 1;

/* shard data, guarded by lk[k] */
bool entry[NK];
byte flight[NK];            /* cell of the flight in progress, 0 = none */
byte fgen[NK];              /* FlightRecord::generation of flight[k] */
byte sgen[NK];              /* FlightTable::generation (shard k's) */
byte revoked[NK];           /* FlightTable::revoked_running */
bool finv[NK];              /* BUG_FOLLOW_REVOKED only: the old FlightRecord::invalidated */
byte lookups[NSH];
byte hits[NSH];
byte stale[NSH];
byte misses[NSH];
byte coalesced[NSH];
byte inserts[NSH];
byte invals[NSH];
byte expired[NSH];
byte events[NSH];

/* lifecycle data, guarded by lk[LIFE] */
byte lstate = L_IDLE;
byte lattempt;              /* Starting { attempt } */
bool lstopreq;              /* Starting { stop_requested } */
byte ldone;                 /* Stopping { done } */
byte lfail;                 /* consecutive failures */

/* process static NODE, guarded by its own lock */
byte nodelk;
bool node_set;

/* ghosts: what happened, for the properties */
byte g_lookups;             /* lookups made */
byte g_events;              /* Counters::record calls made */
byte fetching[NK];          /* fetches of key k running now */
byte hosts;                 /* P2P hosts running now */
byte nodes;                 /* Nodes created */
bool shut_done;             /* some shutdown_p2p has returned */
bool waiting[NC];           /* the client is in OutcomeCell wait / poll */
byte waitcell[NC];          /* ... on this cell */
byte want[NC];              /* lock index + 1 the client is asking for */
byte finished;              /* clients done with all their operations */
byte data[NK];              /* version of the data behind key k */
byte ever[NK];              /* version entry[k] was filled from */
byte cver[MAXC];            /* version a flight's outcome was filled from */
byte invver[NK];            /* data[k] at the last invalidation covering k */

#define SUM(a) (a[0] + a[1])

/* ------------------------------------------------------------------ locks */
/* sync::lock on a shard or the lifecycle lock. Property lock_order (checked
 * when the lock is asked for): nothing at or after i in the order is held,
 * and no outcome-cell lock (a leaf). Blocks while another client holds it. */
inline acquire(i) {
  atomic {
#ifndef NO_ORDER_CHECK
    assert(!cheld[me] && (held[me] >> i) == 0);
#endif
    want[me] = i + 1;                   /* ghost: what a blocked client waits for */
    lk[i] == 0 -> lk[i] = me + 1; want[me] = 0;
    held[me] = held[me] | (1 << i)
  }
}

inline release(i) {
  atomic { assert(lk[i] == me + 1); lk[i] = 0; held[me] = held[me] & ~(1 << i) }
}

/* the OutcomeCell's own mutex: a leaf, never taken with another lock held */
inline cacquire(c) {
  atomic {
#ifndef NO_ORDER_CHECK
    assert(held[me] == 0 && !cheld[me]);
#endif
    clk[c] == 0 -> clk[c] = me + 1; cheld[me] = 1
  }
}

inline crelease(c) {
  atomic { clk[c] = 0; cheld[me] = 0 }
}

inline newcell(c) {
  atomic { assert(ncell < MAXC); c = ncell; ncell++ }
}

/* ----------------------------------------------------------- OutcomeCell */
/* OutcomeCell::publish: store the value and take the wakers under the lock;
 * notify the condvar and wake the wakers after releasing it. */
inline publish(c, v) {
  atomic {
    cacquire(c);
    assert(cval[c] == 0);               /* published once */
    cval[c] = v;
    wakers = wk[c];
    wk[c] = 0;
    crelease(c)
  };
  d_step {                              /* notify_all, then each waker.wake() */
    i = 0;
    do
    :: i < NC ->
       if :: (cv[c] | wakers) & (1 << i) -> woken[i] = 1 :: else fi;
       i++
    :: else -> break
    od;
    cv[c] = 0; wakers = 0; i = 0
  }
}

/* OutcomeCell::wait (a thread): check under the lock, else wait; the
 * condvar wait releases the lock and joins the wait set in one step, and
 * takes the lock again when woken. */
inline cwait_thread(c, out) {
#if defined(BUG_WAKEUP_UNLOCKED_CHECK)
  /* BUG: the value is checked without the lock; then the lock is taken and
   * the thread waits without checking again. */
  if
  :: cval[c] != 0 -> out = cval[c]
  :: else ->
     atomic { cacquire(c); cv[c] = cv[c] | (1 << me); woken[me] = 0; crelease(c) };
     atomic { woken[me] ->
              woken[me] = 0; cacquire(c); out = cval[c]; crelease(c) }
  fi
#elif defined(BUG_NOTIFY_NO_STATE)
  /* BUG: the notification is the only record: the waiter waits for it
   * without first checking for a stored outcome. */
  atomic { cacquire(c); cv[c] = cv[c] | (1 << me); woken[me] = 0; crelease(c) };
  atomic { woken[me] ->
              woken[me] = 0; cacquire(c); out = cval[c]; crelease(c) }
#else
  atomic {
    cacquire(c);
    if
    :: cval[c] != 0 -> out = cval[c]
    :: else -> cv[c] = cv[c] | (1 << me); woken[me] = 0
    fi;
    crelease(c)
  };
  do
  :: out != 0 -> break
  :: else ->
     atomic {
       woken[me] ->                     /* parked on the condvar until notified */
       woken[me] = 0;
       cacquire(c);
       if
       :: cval[c] != 0 -> out = cval[c]
       :: else -> cv[c] = cv[c] | (1 << me)
       fi;
       crelease(c)
     }
  od
#endif
}

/* OutcomeCell::poll (an async task): check under the lock, else register
 * the waker under the lock; Pending until woken, then polled again. */
inline cwait_task(c, out) {
  atomic {
    cacquire(c);
    if
    :: cval[c] != 0 -> out = cval[c]
    :: else -> wk[c] = wk[c] | (1 << me); woken[me] = 0
    fi;
    crelease(c)
  };
  do
  :: out != 0 -> break
  :: else ->
     atomic {
       woken[me] ->                     /* Pending until the waker is woken */
       woken[me] = 0;
       cacquire(c);
       if
       :: cval[c] != 0 -> out = cval[c]
       :: else -> wk[c] = wk[c] | (1 << me)
       fi;
       crelease(c)
     }
  od
}

/* Follower::wait (thread) or .await (task), nondeterministically; the same
 * for the P2P waits (those are threads in Rust: OutcomeCell::wait). */
inline cwait(c, out) {
  atomic { waiting[me] = 1; waitcell[me] = c };
#if defined(NO_TASKS) || defined(BUG_WAKEUP_UNLOCKED_CHECK) || defined(BUG_NOTIFY_NO_STATE)
  cwait_thread(c, out);
#else
  if
  :: cwait_thread(c, out)
  :: cwait_task(c, out)
  fi;
#endif
  atomic { waiting[me] = 0; waitcell[me] = 0 }
}

/* --------------------------------------------------------------- the cache */
/* Shard::lookup, with the shard lock held. res: 1 fresh, 2 stale, 0 miss */
inline shard_lookup(k, res) {
  lookups[k]++; g_lookups++;
  /* Property no_stale_fill: an entry found is never older than the last
   * invalidation covering its key (linearized at its critical section). */
  assert(!entry[k] || ever[k] >= invver[k]);
  if
  :: entry[k] ->
     if
     :: hits[k]++; res = 1
     :: stale[k]++; res = 2
     :: entry[k] = 0; expired[k]++; misses[k]++; res = 0
     fi
  :: else -> misses[k]++; res = 0
  fi
}

/* Cache::lookup */
inline lookup(k) {
  atomic { acquire(k); shard_lookup(k, res); release(k); res = 0 }
}

/* Cache::insert (an Origin::Peer entry also records PeerHit) */
inline insert(k) {
  atomic {
    acquire(k);
    if :: events[k]++; g_events++ :: skip fi;
    entry[k] = 1;
    ever[k] = data[k];                  /* the writer's value is current */
    inserts[k]++;
    release(k)
  }
}

/* Shard::invalidate / Shard::clear on one shard, lock held:
 * FlightTable::invalidate raises the generation and revokes the flight */
inline shard_invalidate(k) {
  sgen[k]++;
#ifdef BUG_FOLLOW_REVOKED
  /* BUG (src/core as before flight_table.rs): the flight is only marked, so
   * a later begin still follows it and receives its older answer */
  if :: flight[k] != 0 -> finv[k] = 1 :: else fi;
#else
  if :: flight[k] != 0 -> flight[k] = 0; revoked[k]++ :: else fi;
#endif
  invver[k] = data[k];                  /* ghost: linearization point */
  if :: entry[k] -> entry[k] = 0; invals[k]++ :: else fi
}

/* Cache::invalidate */
inline invalidate(k) {
  atomic { acquire(k); shard_invalidate(k); release(k) }
}

/* Cache::clear: each_shard(Shard::clear), one lock at a time; counters kept */
inline clear() {
  j = 0;
  do
  :: j < NSH ->
#ifdef BUG_CLEAR_LOSES
     /* BUG: clear rebuilds the shard, carrying its counters over, in two
      * critical sections: increments between them are lost. */
     atomic { acquire(j); tmp = events[j]; release(j) };
     atomic { acquire(j); shard_invalidate(j); events[j] = tmp; tmp = 0; release(j) };
#else
     atomic { acquire(j); shard_invalidate(j); release(j) };
#endif
     j++
  :: else -> break
  od;
  j = 0
}

/* Cache::record */
inline record(k) {
#ifdef BUG_LOST_INCREMENT
  /* BUG: the counter is bumped outside the shard lock as load-then-store */
  tmp = events[k];
  atomic { events[k] = tmp + 1; g_events++; tmp = 0 }
#else
  atomic { acquire(k); events[k]++; g_events++; release(k) }
#endif
}

/* Cache::stats: every shard lock in ascending order, then the lifecycle lock;
 * one snapshot; property stats_consistent. */
inline stats() {
#ifdef BUG_STATS_UNLOCKED
  /* BUG: the counters are read without the locks, one after another */
  s1 = SUM(lookups);
  s2 = SUM(hits) + SUM(stale) + SUM(misses);
  assert(s1 == s2);                                   /* stats_consistent */
  s1 = 0; s2 = 0
#else
  acquire(0);
  acquire(1);
  atomic {
    acquire(LIFE);
#ifdef BUG_STATS_RELOCK
    /* BUG: with every lock held, a helper locks the lifecycle
     * again to read the P2P state; std's Mutex is not reentrant. */
    acquire(LIFE);
#endif
    assert(SUM(hits) + SUM(stale) + SUM(misses) == SUM(lookups));    /* stats_consistent */
    assert(SUM(coalesced) <= SUM(stale) + SUM(misses));              /* stats_consistent */
    assert(entry[0] + entry[1] + SUM(expired) + SUM(invals) <= SUM(inserts));
    assert(lstate != L_RUNNING || hosts == 1);                       /* stats_consistent */
    assert(hosts == 0 || lstate == L_STARTING || lstate == L_RUNNING || lstate == L_STOPPING);
    release(LIFE);
    release(1);
    release(0)
  }
#endif
}

/* A callback (the fetch or the starter) may call back into the cache. */
inline callback(k) {
#ifndef NO_CALLBACKS
  /* choose first, then act: an option's first statement is its guard, and
   * a blocked lock must not silently steer the choice */
  if :: op = 1 :: op = 2 :: op = 0 fi;
  if
  :: op == 1 -> stats()
  :: op == 2 -> lookup(k)
  :: else
  fi;
  op = 0
#else
  skip
#endif
}

/* ----------------------------------------------------------- single flight */
/* Cache::get_or_fetch = Cache::begin, then Follower::wait, or the fetch and
 * FlightLeader::complete, or (panic / cancelled task) FlightLeader's Drop. */
inline get_or_fetch(k) {
  skip;
retry:
  /* Cache::begin: lookup and decide in one critical section */
  atomic {
    acquire(k);
    shard_lookup(k, res);
    if
    :: res == 1 -> release(k); role = 0                   /* Begin::Fresh */
    :: res != 1 && flight[k] != 0 ->                      /* Begin::Follow */
       c = flight[k];
       need = invver[k];                 /* ghost: what this caller may get */
       coalesced[k]++;
       release(k);
       role = 1
    :: res != 1 && flight[k] == 0 ->                      /* Begin::Lead */
       newcell(c);
       flight[k] = c;
       fgen[k] = sgen[k]; g = sgen[k];   /* FlightTable::start */
       finv[k] = 0;
#ifndef BUG_FETCH_UNDER_LOCK
       release(k);
#endif
       role = 2
    fi;
    res = 0
  };
  if
  :: role == 0 -> skip
  :: role == 1 ->
     cwait(c, out);
     if
     :: out == ABANDONED -> c = 0; out = 0; need = 0; goto retry     /* start over */
     :: else -> assert(out == DONE_OK || out == DONE_ERR);
        /* Property no_stale_fill: a follower never gets an answer older
         * than an invalidation that came before it joined */
        assert(out != DONE_OK || cver[c] >= need)
     fi
  :: role == 2 ->
     /* the fetch, with no lock held. Property one_fetch: any other fetch
      * of the key running belongs to a revoked flight. */
     atomic { assert(fetching[k] <= revoked[k]); fetching[k]++ };
     v = data[k];                        /* reads the data as it is now */
     callback(k);
     fetching[k]--;
#ifdef BUG_FETCH_UNDER_LOCK
     /* BUG: the guard from begin is dropped only after the fetch */
     release(k);
#endif
     atomic {
       acquire(k);
       /* FlightTable::finish: the lease check, in the same critical
        * section as the insert */
#ifdef BUG_FOLLOW_REVOKED
       assert(flight[k] == c);
       flight[k] = 0;
       cur = !finv[k];
#else
       if
       :: flight[k] != 0 && fgen[k] == g -> assert(flight[k] == c); flight[k] = 0; cur = 1
       :: else -> assert(revoked[k] > 0); revoked[k]--; cur = 0
       fi;
#endif
       events[k]++; g_events++;          /* ApiCall | FetchError | abandoned_flights */
       if
       :: out = DONE_OK;                 /* FlightLeader::complete(Ok) */
          cver[c] = v;
#ifdef BUG_FILL_UNCHECKED
          /* BUG: the fill is stored whether or not its flight was revoked */
          cur = 1;
#endif
          if :: cur -> entry[k] = 1; ever[k] = v; inserts[k]++ :: else fi
       :: out = DONE_ERR                 /* FlightLeader::complete(Err) */
       :: out = ABANDONED                /* Drop for FlightLeader (panic, cancel) */
       fi;
       release(k)
     };
     publish(c, out)
  fi;
  c = 0; out = 0; role = 0; g = 0; v = 0; need = 0; cur = 0
}

/* The data behind key k changes (a push on GitHub; the owner peer's copy
 * with it), before the invalidation that announces it. */
inline change(k) {
  data[k]++
}

/* ------------------------------------------------------------ P2P lifecycle */
/* Cache::start_p2p (Node::start_p2p), with StartAttempt::finish / record
 * (and its Drop: a panicking starter is recorded as an Err) and
 * Lifecycle::finish_start. */
inline start_p2p() {
#ifdef BUG_P2P_CHECK_THEN_ACT
  /* BUG: check the state, release, start, then record Running */
  atomic { acquire(LIFE); ok = (lstate == L_IDLE || lstate == L_BACKOFF); release(LIFE) };
  if
  :: ok ->
     atomic { assert(!shut_done); hosts++; assert(hosts <= 1) };   /* one_host */
     atomic { acquire(LIFE); lstate = L_RUNNING; release(LIFE) }
  :: else
  fi;
  ok = 0
#else
  atomic {
    acquire(LIFE);
    if
    :: lstate == L_DISABLED || lstate == L_DEGRADED || lstate == L_STOPPING ||
       lstate == L_STOPPED || lstate == L_RUNNING -> role = 0
    :: lstate == L_BACKOFF -> role = 0                   /* now < retry_at */
    :: lstate == L_STARTING -> c = lattempt; role = 1    /* wait for it */
    :: lstate == L_IDLE || lstate == L_BACKOFF ->        /* this caller starts */
       newcell(c);
       lattempt = c;
       lstopreq = 0;
       lstate = L_STARTING;
       role = 2
    fi;
#ifdef BUG_STARTER_UNDER_LOCK
    if :: role != 2 -> release(LIFE) :: else fi
#else
    release(LIFE)
#endif
  };
  if
  :: role == 0 -> skip
  :: role == 1 -> cwait(c, out)
  :: role == 2 ->
     /* the starter, with no lock held. Properties one_host and
      * no_host_after_shutdown (nothing starts after shutdown). */
     callback(0);
     if
     :: atomic { assert(!shut_done); hosts++; assert(hosts <= 1); ok = 1 }
     :: skip                                   /* Err, or a panic (Drop) */
     fi;
#ifdef BUG_STARTER_UNDER_LOCK
     /* BUG: the starter ran with the lifecycle lock held */
     release(LIFE);
#endif
     /* StartAttempt::record -> Lifecycle::finish_start */
     atomic {
       acquire(LIFE);
       assert(lstate == L_STARTING && lattempt == c);   /* unreachable!() */
       if
       :: lstopreq && ok ->
          out = O_SHUTDOWN;
#ifdef BUG_STOPPED_BEFORE_STOP
          /* src/core/lifecycle.rs as first committed: Stopped is recorded
           * before the host is stopped (README: found by this model, fixed). */
          lstate = L_STOPPED
#else
          /* the fix: Stopping { done } while the starter stops the host,
           * as shutdown's own Stop path does */
          newcell(d);
          ldone = d;
          lstate = L_STOPPING
#endif
       :: lstopreq && !ok -> lstate = L_STOPPED; out = O_SHUTDOWN
       :: !lstopreq && ok -> lfail = 0; lstate = L_RUNNING; out = O_RUNNING
       :: !lstopreq && !ok ->
          lfail++;
          if
          :: lfail >= MAXFAIL -> lstate = L_DEGRADED
          :: else -> lstate = L_BACKOFF
          fi;
          out = O_FAILED
       fi;
       release(LIFE)
     };
     if
     :: out == O_SHUTDOWN && ok ->
        callback(0);                                    /* P2pHost::stop, no lock held */
        atomic { assert(hosts == 1); hosts-- };         /* host.stop() */
#ifndef BUG_STOPPED_BEFORE_STOP
        /* the fix, continued: then Stopped, and `done` published
         * (a StopInProgress), before the attempt's outcome */
        atomic { acquire(LIFE); lstate = L_STOPPED; release(LIFE) };
        publish(d, 1);
        d = 0
#endif
     :: else
     fi;
     publish(c, out)
  fi;
  c = 0; out = 0; ok = 0; role = 0
#endif
}

/* Cache::shutdown_p2p (Node::shutdown_p2p), with StopInProgress's Drop */
inline shutdown_p2p() {
  atomic {
    acquire(LIFE);
    if
    :: lstate == L_STOPPED -> role = 0
    :: lstate == L_STOPPING -> c = ldone; role = 1          /* WaitForStop */
    :: lstate == L_STARTING ->                              /* WaitForStarter */
       lstopreq = 1;
       c = lattempt;
#ifdef BUG_SHUTDOWN_IGNORES_START
       /* BUG: the request is recorded but shutdown returns at once */
       role = 0
#else
       role = 1
#endif
    :: lstate == L_RUNNING ->                               /* Stop */
       newcell(c);
       ldone = c;
       lstate = L_STOPPING;                                 /* host moved out */
       role = 2
    :: lstate == L_IDLE || lstate == L_DISABLED || lstate == L_BACKOFF ||
       lstate == L_DEGRADED -> lstate = L_STOPPED; role = 0
    fi;
    release(LIFE)
  };
  if
  :: role == 0 -> skip
  :: role == 1 -> cwait(c, out)
  :: role == 2 ->
     callback(0);                                           /* P2pHost::stop, no lock held */
     atomic { assert(hosts == 1); hosts-- };                /* host.stop(): once */
     atomic { acquire(LIFE); lstate = L_STOPPED; release(LIFE) };
     publish(c, 1)
  fi;
  /* Property no_host_after_shutdown: when shutdown returns, no host runs */
  atomic { assert(hosts == 0); shut_done = 1; c = 0; out = 0; role = 0 }
}

/* --------------------------------------------------------- process singleton */
/* Node::init */
inline node_init() {
#ifdef BUG_NODE_CHECK_THEN_ACT
  /* BUG: check, release, build, store */
  atomic { nodelk == 0 -> nodelk = me + 1; ok = !node_set; nodelk = 0 };
  if
  :: ok ->
     atomic { assert(nodes == 0); nodes++ };               /* one_node */
     atomic { nodelk == 0 -> nodelk = me + 1; node_set = 1; nodelk = 0 }
  :: else
  fi;
  ok = 0
#else
  atomic {
    nodelk == 0 -> nodelk = me + 1;
    if
    :: node_set -> skip                                     /* AlreadyInitialized */
    :: else -> assert(nodes == 0); nodes++; node_set = 1    /* property one_node */
    fi;
    nodelk = 0
  }
#endif
}

/* ----------------------------------------------------------------- clients */
/* A client's operations are chosen by the guards of an if: an operation
 * that starts by taking a lock is chosen only when that lock is free. That
 * hides no deadlock: the client holds nothing when it chooses, so a lock that
 * is never free again is held by a client that is stuck for good, and spin
 * reports that state. (Callbacks run while the client may hold a lock in a
 * bug variant, so callback() commits to its choice first.) */
proctype client(byte me) {
  byte n, i, j, k, c, d, out, res, ok, role, op, tmp, wakers, s1, s2, g, v, need, cur;
  do
  :: n < NOPS ->
#if defined(S_FLIGHT)
     /* single flight on key 0; with -DDISTURB the last client races it
      * with invalidate, clear or stats instead */
     if
     :: me < NC - 1 -> get_or_fetch(0)
     :: me == NC - 1 ->
#ifndef DISTURB
        get_or_fetch(0)
#else
        if
        :: invalidate(0)
        :: clear()
        :: stats()
        fi
#endif
     fi;
#elif defined(S_STALE)
     /* the stale-fill race: clients fill key 0 through the single flight;
      * the last one changes the data, invalidates (the key, or clear), then
      * reads the key itself */
     if
     :: me < NC - 1 -> get_or_fetch(0)
     :: me == NC - 1 ->
        change(0);
        if
        :: invalidate(0)
        :: clear()
        fi;
        get_or_fetch(0)
     fi;
#elif defined(S_CACHE)
     /* every plain path on both shards, and stats */
     if :: k = 0 :: k = 1 fi;
     if
     :: lookup(k)
     :: insert(k)
     :: invalidate(k)
     :: record(k)
     :: clear()
     :: stats()
     fi;
     k = 0;
#elif defined(S_P2P)
     if
     :: start_p2p()
     :: shutdown_p2p()
     :: stats()
     fi;
#elif defined(S_NODE)
     node_init();
#endif
     n++
  :: else -> break
  od;
  finished++
}

/* Property no_lost_increment: once every client is done, every counted
 * event is in the counters. Blocked until then (a valid end state). */
active proctype counters_check() {
end:
  atomic {
    finished == NC ->
    assert(SUM(lookups) == g_lookups && SUM(events) == g_events)
  }
}

init {
  byte i;
  atomic {
    i = 0;
    do
    :: i < NC -> run client(i); i++
    :: else -> break
    od
  }
}

/* -------------------------------------------------------------------- LTL */
#ifdef LTL
#if NC == 3
#define EVERY_WAITER_RETURNS ((waiting[0] -> <> !waiting[0]) && (waiting[1] -> <> !waiting[1]) && (waiting[2] -> <> !waiting[2]))
#elif NC == 4
#define EVERY_WAITER_RETURNS ((waiting[0] -> <> !waiting[0]) && (waiting[1] -> <> !waiting[1]) && (waiting[2] -> <> !waiting[2]) && (waiting[3] -> <> !waiting[3]))
#else
#define EVERY_WAITER_RETURNS ((waiting[0] -> <> !waiting[0]) && (waiting[1] -> <> !waiting[1]))
#endif
/* every waiter (follower, concurrent starter, concurrent shutdown) returns */
ltl waiters_return { [] EVERY_WAITER_RETURNS }
/* every client finishes all its operations */
ltl clients_finish { <> (finished == NC) }
/* a start in progress always ends */
ltl start_settles { [] ((lstate == L_STARTING) -> <> (lstate != L_STARTING)) }
/* at most one host, ever */
ltl one_host { [] (hosts <= 1) }
/* once a shutdown has returned, no host runs, ever */
ltl no_host_after_shutdown { [] (shut_done -> (hosts == 0)) }
#endif
