//! Patient-grouped, class-stratified folds: the one way covidct deals groups into folds inside
//! a split (the shortcut test's cross-validation, the probe's cross-fitting).
//!
//! Groups are shuffled with the seed and dealt, largest first, to the fold holding the fewest
//! samples of the group's majority class, so every group lies in exactly one fold and the
//! folds have about the same size and class balance.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::bootstrap::group_members;

/// The fold (`0..k`) of every sample: samples of one group share a fold; `labels` give the
/// strata. `k` is clamped to at least 1.
pub fn group_folds<S: AsRef<str>>(
    labels: &[bool],
    groups: &[S],
    k: usize,
    seed: u64,
) -> Vec<usize> {
    let k = k.max(1);
    let members = group_members(groups);
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    // Largest first; the stable sort keeps the shuffled order among equal sizes.
    order.sort_by_key(|&g| std::cmp::Reverse(members[g].len()));
    let mut filled = [vec![0usize; k], vec![0usize; k]];
    let mut fold_of = vec![0; labels.len()];
    for g in order {
        let positives = members[g]
            .iter()
            .filter(|&&i| labels.get(i).copied().unwrap_or(false))
            .count();
        let stratum = usize::from(2 * positives >= members[g].len());
        let fold = (0..k).min_by_key(|&f| filled[stratum][f]).unwrap_or(0);
        filled[stratum][fold] += members[g].len();
        for &i in &members[g] {
            if let Some(slot) = fold_of.get_mut(i) {
                *slot = fold;
            }
        }
    }
    fold_of
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_keep_groups_whole_and_balanced() {
        // 100 groups of 4 slices, one label per group, every fifth group positive.
        let groups: Vec<String> = (0..400).map(|i| format!("patient {}", i / 4)).collect();
        let labels: Vec<bool> = (0..400).map(|i| (i / 4) % 5 == 0).collect();
        let fold_of = group_folds(&labels, &groups, 5, 42);
        for (i, group) in groups.iter().enumerate() {
            let first = groups.iter().position(|g| g == group).unwrap();
            assert_eq!(fold_of[i], fold_of[first], "{group} split across folds");
        }
        for fold in 0..5 {
            let size = fold_of.iter().filter(|&&f| f == fold).count();
            let positives = (0..400)
                .filter(|&i| fold_of[i] == fold && labels[i])
                .count();
            assert_eq!((size, positives), (80, 16), "fold {fold}");
        }
        assert_ne!(
            fold_of,
            group_folds(&labels, &groups, 5, 7),
            "the seed deals"
        );
    }
}
