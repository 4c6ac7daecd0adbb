//! CSV import of spaces. Errors name the line (1-based, header is line 1) and the column.

use berth_kernel::space::{SpaceCategory, SpaceInput};
use berth_kernel::vehicle_type::VehicleType;

use crate::problem::ApiError;

const COLUMNS: [&str; 7] = ["code", "lat", "lon", "category", "vehicle_type", "ev_charger", "accessible"];

pub fn parse_spaces_csv(text: &str) -> Result<Vec<SpaceInput>, ApiError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| ApiError::bad_request(format!("CSV header: {e}")))?.clone();
    for header in headers.iter() {
        if !COLUMNS.contains(&header) {
            return Err(ApiError::validation(
                "header",
                format!("line 1: unknown column '{header}'; expected some of {}", COLUMNS.join(", ")),
            ));
        }
    }
    let column = |name: &str| headers.iter().position(|header| header == name);
    let Some(code_idx) = column("code") else {
        return Err(ApiError::validation("header", "line 1: the 'code' column is required"));
    };
    let lat_idx = column("lat");
    let lon_idx = column("lon");
    let category_idx = column("category");
    let vehicle_type_idx = column("vehicle_type");
    let ev_idx = column("ev_charger");
    let accessible_idx = column("accessible");

    let mut inputs = Vec::new();
    for (row_idx, record) in reader.records().enumerate() {
        let line = row_idx + 2;
        let record = record.map_err(|e| ApiError::bad_request(format!("line {line}: {e}")))?;
        let cell = |idx: Option<usize>| idx.and_then(|idx| record.get(idx)).filter(|value| !value.is_empty());
        let fail = |name: &str, message: String| {
            ApiError::validation(format!("line {line}.{name}"), format!("line {line}, column {name}: {message}"))
        };
        let number = |name: &str, idx: Option<usize>| -> Result<Option<f64>, ApiError> {
            cell(idx)
                .map(|value| value.parse::<f64>().map_err(|_| fail(name, format!("'{value}' is not a number"))))
                .transpose()
        };
        let boolean = |name: &str, idx: Option<usize>| -> Result<bool, ApiError> {
            match cell(idx).map(str::to_ascii_lowercase).as_deref() {
                None | Some("false" | "no" | "0" | "n") => Ok(false),
                Some("true" | "yes" | "1" | "y") => Ok(true),
                Some(other) => Err(fail(name, format!("'{other}' is not true/false"))),
            }
        };
        let category = cell(category_idx)
            .map(|value| {
                SpaceCategory::parse(value).ok_or_else(|| fail("category", format!("unknown category '{value}'")))
            })
            .transpose()?;
        let vehicle_type = cell(vehicle_type_idx)
            .map(|value| {
                VehicleType::parse(value).ok_or_else(|| fail("vehicle_type", format!("unknown vehicle type '{value}'")))
            })
            .transpose()?;
        inputs.push(SpaceInput {
            code: cell(Some(code_idx)).unwrap_or_default().to_owned(),
            lat: number("lat", lat_idx)?,
            lon: number("lon", lon_idx)?,
            category,
            vehicle_type,
            ev_charger: boolean("ev_charger", ev_idx)?,
            accessible: boolean("accessible", accessible_idx)?,
        });
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_realistic_file() {
        let text =
            "code,lat,lon,vehicle_type,ev_charger,accessible\nA-1,41.15,-8.61,car,yes,\nA-2,,,motorcycle,0,true\n";
        let inputs = parse_spaces_csv(text).unwrap();
        assert_eq!(inputs.len(), 2);
        assert!(inputs[0].ev_charger);
        assert_eq!(inputs[1].lat, None);
        assert!(inputs[1].accessible);
    }

    #[test]
    fn errors_name_line_and_column() {
        let error = parse_spaces_csv("code,lat\nA-1,north\n").unwrap_err();
        let ApiError::Unprocessable(problem) = error else { panic!("expected 422, got {error:?}") };
        assert_eq!(problem.0.field.as_deref(), Some("line 2.lat"));
        assert!(problem.0.detail.contains("line 2, column lat"), "{}", problem.0.detail);
        assert!(matches!(parse_spaces_csv("code,colour\nA,red\n"), Err(ApiError::Unprocessable(_))));
    }
}
