//! Slices grouped into series and put in anatomical order.

use std::fmt;

use covidct_imaging::SeriesInfo;
use serde::Serialize;

use crate::order::natural_order;

/// Which study and series a slice belongs to; both absent for formats without a header
/// (PNG, JPEG…), whose slices form one series per request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeriesKey {
    /// DICOM StudyInstanceUID.
    #[serde(rename = "study_instance_uid")]
    pub study_uid: Option<String>,
    /// DICOM SeriesInstanceUID.
    #[serde(rename = "series_instance_uid")]
    pub series_uid: Option<String>,
}

impl SeriesKey {
    fn of(info: Option<&SeriesInfo>) -> Self {
        Self {
            study_uid: info.and_then(|i| i.study_uid.clone()),
            series_uid: info.and_then(|i| i.series_uid.clone()),
        }
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |uid: &Option<String>| uid.clone().unwrap_or_else(|| "unknown".to_owned());
        if self.study_uid.is_none() && self.series_uid.is_none() {
            return f.write_str("slices without a DICOM study");
        }
        write!(
            f,
            "study {} series {}",
            part(&self.study_uid),
            part(&self.series_uid)
        )
    }
}

/// What the slices of a series were ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SliceOrder {
    /// ImagePositionPatient projected on the slice normal (every slice has both attributes).
    Position,
    /// InstanceNumber (every slice has one).
    InstanceNumber,
    /// Natural order of the file names.
    FileName,
}

impl SliceOrder {
    /// `position`, `instance_number` or `file_name`.
    pub fn as_str(self) -> &'static str {
        match self {
            SliceOrder::Position => "position",
            SliceOrder::InstanceNumber => "instance_number",
            SliceOrder::FileName => "file_name",
        }
    }
}

/// The slices of one series, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The series.
    #[serde(flatten)]
    pub key: SeriesKey,
    /// Indices of its slices in the caller's list, in slice order.
    pub members: Vec<usize>,
    /// What the order follows.
    pub ordered_by: SliceOrder,
}

/// Groups slices (`names` and the headers' series information, `None` for non-DICOM files) by
/// study and series, in order of first appearance, and orders each series by slice position
/// when every slice has one, else by InstanceNumber when every slice has one, else by file name.
/// Ties keep the file-name order.
pub fn group_series(names: &[&str], infos: &[Option<&SeriesInfo>]) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for (index, info) in infos.iter().enumerate() {
        let key = SeriesKey::of(*info);
        match series.iter_mut().find(|s| s.key == key) {
            Some(found) => found.members.push(index),
            None => series.push(Series {
                key,
                members: vec![index],
                ordered_by: SliceOrder::FileName,
            }),
        }
    }
    let name = |i: usize| names.get(i).copied().unwrap_or_default();
    for group in &mut series {
        group
            .members
            .sort_by(|&a, &b| natural_order(name(a), name(b)));
        let info = |i: usize| infos.get(i).copied().flatten();
        let all =
            |f: &dyn Fn(&SeriesInfo) -> bool| group.members.iter().all(|&i| info(i).is_some_and(f));
        if all(&|s| s.slice_location().is_some()) {
            let location = |i: usize| info(i).and_then(SeriesInfo::slice_location).unwrap_or(0.0);
            group
                .members
                .sort_by(|&a, &b| location(a).total_cmp(&location(b)));
            group.ordered_by = SliceOrder::Position;
        } else if all(&|s| s.instance_number.is_some()) {
            group
                .members
                .sort_by_key(|&i| info(i).and_then(|s| s.instance_number));
            group.ordered_by = SliceOrder::InstanceNumber;
        }
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(series: &str, instance: Option<i64>, z: Option<f64>) -> SeriesInfo {
        SeriesInfo {
            study_uid: Some("1.2.3".into()),
            series_uid: Some(series.into()),
            instance_number: instance,
            position: z.map(|z| [-100.0, -100.0, z]),
            orientation: z.map(|_| [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        }
    }

    #[test]
    fn series_are_split_and_ordered_by_position_then_instance_then_name() {
        let infos = [
            slice("A", Some(1), Some(30.0)),
            slice("B", Some(2), None),
            slice("A", Some(2), Some(10.0)),
            slice("B", Some(1), None),
            slice("A", Some(3), Some(20.0)),
        ];
        let names = ["a1", "b2", "a2", "b1", "a3"];
        let refs: Vec<_> = infos.iter().map(Some).collect();
        let series = group_series(&names, &refs);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].key.series_uid.as_deref(), Some("A"));
        assert_eq!(series[0].ordered_by, SliceOrder::Position);
        assert_eq!(series[0].members, [2, 4, 0]);
        assert_eq!(series[1].ordered_by, SliceOrder::InstanceNumber);
        assert_eq!(series[1].members, [3, 1]);
    }

    #[test]
    fn files_without_headers_form_one_series_in_natural_name_order() {
        let names = ["s10.png", "s9.png", "s1.png"];
        let series = group_series(&names, &[None, None, None]);
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].ordered_by, SliceOrder::FileName);
        assert_eq!(series[0].members, [2, 1, 0]);
        assert_eq!(series[0].key.to_string(), "slices without a DICOM study");
    }

    #[test]
    fn the_normal_follows_the_orientation() {
        // Sagittal: rows along y, columns along z: the normal is x.
        let info = SeriesInfo {
            position: Some([7.0, 1.0, 2.0]),
            orientation: Some([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
            ..SeriesInfo::default()
        };
        assert_eq!(info.slice_location(), Some(7.0));
    }
}
