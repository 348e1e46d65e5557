//! A study's answer for people: the lines of `covidct predict --study`'s terminal summary
//! (scripts read [`crate::DiagnosisReport`]).

use std::fmt;

use crate::diagnose::StudyAnswer;

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
