//! Power of two choices (`twos`): two weighted random picks, the less loaded one wins.

use super::{Ctx, Flow, Scheduler, available, name};
use crate::snapshot::Dest;

/// Power of two random choices, as `ip_vs_twos.c`: two random numbers in `[0, total weight]`
/// each select the first available real server at which the running weight sum reaches them;
/// the second choice wins when its `overhead / weight` is strictly less than the first's.
///
/// Randomness comes from the engine's seeded [`super::Rng`] (one 64-bit draw gives both 32-bit
/// numbers), so runs with one seed are reproducible.
#[derive(Debug)]
pub(crate) struct TwoChoices;

impl TwoChoices {
    /// The pick for the random numbers `r1`, `r2`.
    fn choose(dests: &[Dest], r1: u32, r2: u32) -> Option<(usize, usize)> {
        let total: u64 = dests
            .iter()
            .filter(|d| available(d))
            .map(|d| u64::from(d.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut rw1 = i128::from(u64::from(r1) % (total + 1));
        let mut rw2 = i128::from(u64::from(r2) % (total + 1));
        let (mut c1, mut c2) = (None, None);
        for (i, d) in dests.iter().enumerate() {
            if !available(d) {
                continue;
            }
            rw1 -= i128::from(d.weight);
            rw2 -= i128::from(d.weight);
            if rw1 <= 0 && c1.is_none() {
                c1 = Some(i);
            }
            if rw2 <= 0 && c2.is_none() {
                c2 = Some(i);
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        Some((c1?, c2?))
    }
}

impl Scheduler for TwoChoices {
    fn schedule(&self, dests: &[Dest], _flow: &Flow, ctx: &mut Ctx<'_>) -> Option<usize> {
        let r = ctx.random();
        let Some((c1, c2)) = Self::choose(dests, r as u32, (r >> 32) as u32) else {
            ctx.note(|| "twos: every real server has weight 0 or is overloaded".to_owned());
            return None;
        };
        let (d1, d2) = (&dests[c1], &dests[c2]);
        let (o1, o2) = (d1.state.overhead(), d2.state.overhead());
        let second =
            u128::from(d2.weight) * u128::from(o1) > u128::from(d1.weight) * u128::from(o2);
        let pick = if second { c2 } else { c1 };
        ctx.note(|| {
            format!(
                "twos: random choices {} (overhead {o1}, weight {}) and {} (overhead {o2}, weight {}); {} wins (a random draw: the next connection may differ)",
                name(d1),
                d1.weight,
                name(d2),
                d2.weight,
                name(&dests[pick])
            )
        });
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::testing::*;

    #[test]
    fn random_numbers_select_by_running_weight() {
        let d = dests(&[(2, 0, 0), (0, 0, 0), (3, 0, 0)]);
        // total 5; r % 6: 0..=2 -> first, 3..=5 -> third (the quiescent one never).
        assert_eq!(TwoChoices::choose(&d, 0, 2), Some((0, 0)));
        assert_eq!(TwoChoices::choose(&d, 3, 5), Some((2, 2)));
        assert_eq!(TwoChoices::choose(&d, 6, 9), Some((0, 2)));
    }

    #[test]
    fn less_loaded_choice_wins() {
        let d = dests(&[(10, 5, 0), (10, 1, 0)]);
        let s = TwoChoices;
        let rng = crate::sched::Rng::new(0);
        let mut hits = [0; 2];
        for _ in 0..200 {
            let i = s
                .schedule(
                    &d,
                    &flow([1, 1, 1, 1], 1),
                    &mut Ctx::live(crate::Timestamp(0), &rng),
                )
                .unwrap();
            hits[i] += 1;
        }
        // The loaded server wins only when both choices land on it: r % 21 <= 10 twice,
        // (11/21)^2 = 27% of draws.
        assert!((30..80).contains(&hits[0]), "{hits:?}");
    }
}
