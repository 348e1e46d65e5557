//! A diagnosis for people and scripts: one JSON object as `covidct predict --study --json`
//! prints it, and the lines of its terminal summary.

use std::fmt;

use crate::diagnose::{Diagnosis, StudyAnswer};

impl Diagnosis {
    /// The diagnosis as one JSON object; each slice as `covidct predict --json` shows an image.
    pub fn to_json(&self) -> serde_json::Value {
        let studies: Vec<serde_json::Value> = self
            .studies
            .iter()
            .map(|study| {
                let mut value = serde_json::to_value(study).unwrap_or_default();
                let slices: Vec<serde_json::Value> = study
                    .slices
                    .iter()
                    .enumerate()
                    .map(|(position, slice)| {
                        let mut line = slice.prediction.to_json();
                        line["position"] = position.into();
                        line["index"] = slice.index.into();
                        line["filename"] = slice.name.clone().into();
                        line["instance_number"] = slice.instance_number.into();
                        line["location_mm"] = slice.location.into();
                        line
                    })
                    .collect();
                value["slices"] = slices.into();
                value["slices_total"] = study.slices.len().into();
                value
            })
            .collect();
        serde_json::json!({
            "slices_received": self.slices,
            "studies": studies,
            "unreadable": self.unreadable,
        })
    }
}

/// The verdict line, the slices driving it, then one line per slice.
impl fmt::Display for StudyAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = &self.verdict;
        let counts = format!(
            "{} slices used, {} refused, ordered by {}",
            verdict.used,
            verdict.refused,
            self.ordered_by.as_str()
        );
        match (&verdict.label, verdict.probability, verdict.threshold) {
            (Some(label), Some(p), Some(threshold)) => writeln!(
                f,
                "{}\t{label}\tp={p:.4}\tthreshold={threshold:.4}\trule={}\t{counts}",
                self.series,
                verdict.rule.as_deref().unwrap_or_default()
            )?,
            _ => writeln!(
                f,
                "{}\tno verdict\t{}\t{counts}",
                self.series,
                verdict.reason.as_deref().unwrap_or_default()
            )?,
        }
        for &position in &verdict.drivers {
            if let Some(slice) = self.slices.get(position) {
                writeln!(
                    f,
                    "  driver: slice {position} {} p={:.4}",
                    slice.name, slice.prediction.probability
                )?;
            }
        }
        for (position, slice) in self.slices.iter().enumerate() {
            let shown = if slice.prediction.in_distribution() {
                format!("p={:.4}", slice.prediction.probability)
            } else {
                let summary = slice.prediction.ood.as_ref().map(|o| o.summary());
                format!("refused: {}", summary.unwrap_or_default())
            };
            writeln!(f, "  {position:>4}\t{}\t{shown}", slice.name)?;
        }
        Ok(())
    }
}
