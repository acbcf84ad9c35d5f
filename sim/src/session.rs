//! One session: retrieval, ranking, consumption of the slate, the temper
//! (quit mechanism), state updates and event emission.

use crate::events::{Action, ActionKind, Exposure, RoundEvents};
use crate::metrics::Metrics;
use crate::policy::{Candidate, Policy, Request};
use crate::relation::{half_life_ms, tau_ms, Interaction};
use crate::response::{sample, Ctx};
use crate::sim::Simulator;

/// Dwell, delay and gap times are capped at this many seconds.
const TIME_CAP_S: f64 = 30.0;

fn ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// Keeps valid, distinct indices, at most `k`.
fn sanitize(ranked: Vec<usize>, n: usize, k: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(k);
    for i in ranked {
        if out.len() == k {
            break;
        }
        if i < n && !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

impl Simulator {
    /// Runs one session of user `u` starting at `t0`; returns its end time.
    pub(crate) fn run_session(
        &mut self,
        u: usize,
        t0: i64,
        curfew: i64,
        policy: &mut dyn Policy,
        events: &mut RoundEvents,
        m: &mut Metrics,
    ) -> i64 {
        let k = self.cfg.session.k;
        let patience = self.world.users[u].patience;
        let mut temper = patience;
        let mut t = t0;
        let mut requests = 0u32;
        m.sessions += 1;
        loop {
            let cands = self.retrieve(u, t);
            let req = Request {
                request_id: self.next_request_id,
                user_id: self.world.users[u].id,
                user_feats: self.world.users[u].feats.clone(),
                ts_ms: t,
                candidates: cands
                    .iter()
                    .map(|&i| {
                        let it = &self.world.items[i as usize];
                        Candidate {
                            item_id: it.id,
                            author_id: self.world.authors[it.author as usize].id,
                            item_feats: it.feats.clone(),
                        }
                    })
                    .collect(),
            };
            self.next_request_id += 1;
            let ranked = policy.rank(&req, k, &self.peek());
            let slate = sanitize(ranked, cands.len(), k);
            requests += 1;
            m.requests += 1;
            if slate.is_empty() {
                m.quit_other += 1;
                break;
            }
            let mut authors: Vec<u64> =
                slate.iter().map(|&c| req.candidates[c].author_id).collect();
            authors.sort_unstable();
            authors.dedup();
            m.diversity_sum += authors.len() as f64 / k as f64;
            let mut exhausted = false;
            for (pos, &c) in slate.iter().enumerate() {
                t = self.expose(u, cands[c], &req, pos as u32, t, &mut temper, events, m);
                if temper <= 0.0 {
                    exhausted = true;
                    break;
                }
            }
            let sc = &self.cfg.session;
            if exhausted {
                m.quit_temper += 1;
                break;
            }
            t += ms(self
                .timing
                .lognormal(sc.browse_gap_s, sc.time_sigma)
                .min(TIME_CAP_S));
            if self.behave.bernoulli(sc.base_quit_prob) {
                m.quit_base += 1;
                break;
            }
            if requests >= sc.max_requests {
                m.quit_cap += 1;
                break;
            }
            if t >= curfew {
                m.quit_other += 1;
                break;
            }
        }
        m.max_session_requests = m.max_session_requests.max(requests);
        t
    }

    /// User `u` sees item `i` at `t` (slot `pos` of `req`): samples the
    /// response, emits events, updates temper, relationship and fatigue.
    /// Returns when the user moves on.
    #[allow(clippy::too_many_arguments)]
    fn expose(
        &mut self,
        u: usize,
        i: u32,
        req: &Request,
        pos: u32,
        t: i64,
        temper: &mut f64,
        events: &mut RoundEvents,
        m: &mut Metrics,
    ) -> i64 {
        let cfg = &self.cfg;
        let item = &self.world.items[i as usize];
        let a = item.author;
        let author = &self.world.authors[a as usize];
        let st = &self.users[u];
        let view = st.view(a, t, half_life_ms(cfg));
        let fatigue = st.fatigue(a, t, tau_ms(cfg));
        let ctx = Ctx {
            affinity: self.world.affinity(u, a as usize),
            depth: view.depth,
            followed: view.followed,
            fatigue,
        };
        let r = sample(cfg, item, author, &ctx, &mut self.behave);

        let (ec, sc) = (&cfg.events, &cfg.session);
        let exposure = Exposure {
            request_id: req.request_id,
            user_id: req.user_id,
            item_id: item.id,
            author_id: author.id,
            ts_ms: t,
            position: pos,
            user_feats: req.user_feats.clone(),
            item_feats: item.feats.clone(),
        };
        if self.timing.bernoulli(ec.dup_exposure_frac) {
            events.exposures.push(exposure.clone());
        }
        events.exposures.push(exposure);
        let latest = t + ec.attribution_window_ms - 1000;
        let mut emit = |timing: &mut crate::rng::Rng, ts: i64, action: ActionKind, value: f64| {
            let a = Action {
                request_id: req.request_id,
                user_id: req.user_id,
                item_id: item.id,
                ts_ms: ts.clamp(t, latest),
                action,
                value,
            };
            if timing.bernoulli(ec.dup_action_frac) {
                events.actions.push(a.clone());
            }
            events.actions.push(a);
        };
        let tm = &mut self.timing;
        let mut next = if r.clicked {
            let t_click = t + ms(tm
                .lognormal(sc.click_delay_s, sc.time_sigma)
                .min(TIME_CAP_S));
            let t_end = t_click + ms(r.watch_s);
            emit(tm, t_click, ActionKind::Click, 1.0);
            emit(tm, t_end, ActionKind::Watch, r.watch_s);
            if r.follow {
                let d = tm.lognormal(ec.follow_delay_s, ec.delay_sigma);
                emit(tm, t_end + ms(d), ActionKind::Follow, 1.0);
            }
            if r.gift > 0.0 {
                let d = tm.lognormal(ec.gift_delay_s, ec.delay_sigma);
                emit(tm, (t + ms(d)).max(t_click), ActionKind::Gift, r.gift);
            }
            t_end
        } else {
            t + ms(tm.lognormal(sc.skip_dwell_s, sc.time_sigma).min(TIME_CAP_S))
        };
        next += ms(tm.lognormal(sc.browse_gap_s, sc.time_sigma).min(TIME_CAP_S));

        *temper -= if !r.clicked {
            sc.skip_cost
        } else if r.short {
            sc.short_cost
        } else if r.satisfying {
            -sc.satisfy_recover
        } else {
            sc.neutral_cost
        };
        *temper -= cfg.fatigue.temper_penalty * fatigue;
        let patience = self.world.users[u].patience;
        *temper = temper.min(sc.temper_cap * patience);

        let interaction = Interaction {
            satisfying: r.satisfying,
            short: r.short,
            follow: r.follow,
            gift: r.gift,
        };
        let bond = author.bond;
        self.users[u].record(&self.cfg, a, bond, t, interaction);

        m.exposures += 1;
        m.clicks += r.clicked as u64;
        m.satisfying += r.satisfying as u64;
        m.watch_sec += r.watch_s;
        m.new_fans += r.follow as u64;
        m.gifts += (r.gift > 0.0) as u64;
        m.gift_total += r.gift;
        next
    }

    /// N candidate item indices for user `u` at `t`, from the relationship,
    /// affinity-pool, popularity and uniform channels, shuffled.
    pub(crate) fn retrieve(&mut self, u: usize, t: i64) -> Vec<u32> {
        let n_items = self.world.items.len();
        let rc = &self.cfg.retrieval;
        let n = rc.n_candidates.min(n_items);
        let rng = &mut self.retrieve_rng;
        if n == n_items {
            let mut all: Vec<u32> = (0..n_items as u32).collect();
            rng.shuffle(&mut all);
            return all;
        }
        self.stamp_gen = self.stamp_gen.wrapping_add(1);
        if self.stamp_gen == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.stamp_gen = 1;
        }
        let (stamp, gen) = (&mut self.stamp, self.stamp_gen);
        let mut out: Vec<u32> = Vec::with_capacity(n);
        let mut take = |out: &mut Vec<u32>, i: u32| {
            if stamp[i as usize] != gen {
                stamp[i as usize] = gen;
                out.push(i);
            }
        };
        let hl = half_life_ms(&self.cfg);
        let related: Vec<u32> = self.users[u]
            .rels
            .iter()
            .filter(|(_, r)| r.followed || r.depth_at(t, hl) >= rc.relationship_min_depth)
            .map(|(&a, _)| a)
            .collect();
        let pool = &self.world.users[u].affinity_pool;
        let authors = &self.world.authors;
        let share = |s: f64| (s * n as f64).round() as usize;
        let targets = [
            share(rc.relationship_share),
            share(rc.relationship_share + rc.affinity_share),
            share(rc.relationship_share + rc.affinity_share + rc.popular_share),
        ];
        for (channel, &target) in targets.iter().enumerate() {
            let target = target.min(n);
            let mut attempts = 0;
            while out.len() < target && attempts < 4 * n {
                attempts += 1;
                let i = match channel {
                    0 | 1 => {
                        let list: &[u32] = if channel == 0 { &related } else { pool };
                        if list.is_empty() {
                            break;
                        }
                        let items = &authors[list[rng.index(list.len())] as usize].items;
                        items[rng.index(items.len())]
                    }
                    _ => rng.weighted(&self.world.popularity_cum) as u32,
                };
                take(&mut out, i);
            }
        }
        let mut attempts = 0;
        while out.len() < n && attempts < 20 * n {
            attempts += 1;
            take(&mut out, rng.index(n_items) as u32);
        }
        let mut i = rng.index(n_items);
        while out.len() < n {
            take(&mut out, i as u32);
            i = (i + 1) % n_items;
        }
        rng.shuffle(&mut out);
        out
    }
}
