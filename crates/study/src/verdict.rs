//! One calibrated verdict from a series of slice probabilities, by the package's group rule.

use covidct_evaluation::GroupRule;
use covidct_model::PackageMetadata;
use serde::Serialize;

/// When a study gets a verdict, and how it is explained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StudyRules {
    /// Fewest usable (decoded and not refused) slices for a verdict.
    pub min_slices: usize,
    /// Smallest share of the decoded slices that must be usable: a series the gate mostly
    /// refuses is not a chest CT the model can judge, whatever its remaining slices say.
    pub min_usable_share: f64,
    /// Slices named as having driven the verdict.
    pub drivers: usize,
}

impl Default for StudyRules {
    /// At least 3 usable slices and half of the decoded ones; 3 drivers named.
    fn default() -> Self {
        Self {
            min_slices: 3,
            min_usable_share: 0.5,
            drivers: 3,
        }
    }
}

/// One decoded slice as the verdict sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceScore {
    /// Calibrated positive probability of the slice.
    pub probability: f64,
    /// Whether the out-of-distribution gate let it through.
    pub in_distribution: bool,
}

/// The study's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StudyVerdict {
    /// The predicted class, or `None` when the study gets no verdict ([`Self::reason`]).
    pub label: Option<String>,
    /// Calibrated study probability of the positive class (`None` without a verdict).
    pub probability: Option<f64>,
    /// The study threshold: positive when `probability >= threshold`.
    pub threshold: Option<f64>,
    /// The aggregation rule (fitted on validation patients), as text.
    pub rule: Option<String>,
    /// Slices that entered the score.
    #[serde(rename = "slices_used")]
    pub used: usize,
    /// Slices the out-of-distribution gate refused (left out).
    #[serde(rename = "slices_refused")]
    pub refused: usize,
    /// Why there is no verdict.
    pub reason: Option<String>,
    /// Positions (in the series order) of the slices that drove the verdict: the most
    /// positive usable slices of a positive study, the least positive of a negative one.
    pub drivers: Vec<usize>,
}

/// The verdict on a series whose decoded slices, in order, scored `slices`, by the group rule
/// stored in `metadata` and the `rules` for refusing to answer.
pub fn study_verdict(
    metadata: &PackageMetadata,
    slices: &[SliceScore],
    rules: &StudyRules,
) -> StudyVerdict {
    let usable: Vec<(usize, f64)> = slices
        .iter()
        .enumerate()
        .filter(|(_, s)| s.in_distribution)
        .map(|(i, s)| (i, s.probability))
        .collect();
    let refused = slices.len() - usable.len();
    let mut verdict = StudyVerdict {
        label: None,
        probability: None,
        threshold: metadata.group.as_ref().map(|g| g.threshold),
        rule: metadata.group.as_ref().map(|g| g.rule.to_string()),
        used: usable.len(),
        refused,
        reason: None,
        drivers: Vec::new(),
    };
    let Some(group) = &metadata.group else {
        verdict.reason = Some(
            "this model package has no study rule (it was trained without validation patients \
             of both classes)"
                .to_owned(),
        );
        return verdict;
    };
    let needed = rules
        .min_slices
        .max((rules.min_usable_share * slices.len() as f64).ceil() as usize)
        .max(1);
    if usable.len() < needed {
        verdict.reason = Some(format!(
            "{} of {} decoded slices are usable ({refused} refused by the out-of-distribution \
             gate); a verdict needs at least {needed} (at least {} and {:.0}% of the slices)",
            usable.len(),
            slices.len(),
            rules.min_slices,
            100.0 * rules.min_usable_share
        ));
        return verdict;
    }
    let probabilities: Vec<f64> = usable.iter().map(|&(_, p)| p).collect();
    let probability = group.probability(&probabilities);
    let positive = probability >= group.threshold;
    let mut ranked = usable;
    ranked.sort_by(|a, b| {
        let order = b.1.total_cmp(&a.1);
        if positive { order } else { order.reverse() }
    });
    let keep = match group.rule {
        GroupRule::TopMean { fraction } if positive => {
            ((ranked.len() as f64 * fraction).ceil() as usize).max(1)
        }
        _ => ranked.len(),
    };
    verdict.drivers = ranked
        .iter()
        .take(keep.min(rules.drivers))
        .map(|&(i, _)| i)
        .collect();
    verdict.probability = Some(probability);
    verdict.label = Some(class_of(metadata, positive));
    verdict
}

/// The positive class's name, or the first other class's.
fn class_of(metadata: &PackageMetadata, positive: bool) -> String {
    let index = if positive {
        metadata.positive_class
    } else {
        (0..metadata.class_names.len())
            .find(|&i| i != metadata.positive_class)
            .unwrap_or(0)
    };
    metadata.class_names.get(index).cloned().unwrap_or_default()
}
