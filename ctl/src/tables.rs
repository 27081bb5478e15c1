//! The plain, borderless tables every command prints.

use comfy_table::{presets, CellAlignment, Table};

pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_header(header.to_vec());
    table
}

/// Right-aligns every column from `from_column` on (the numbers).
pub fn right_align(table: &mut Table, from_column: usize) {
    let count = table.column_count();
    for index in from_column..count {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Checks that every column of a table names a JSON field of its row, so a
/// script reading `-o json` finds what the table shows under the same name:
/// `FAST PATH PACKETS` is `fast_path_packets`, `X/S` is `x_per_sec`, a time
/// `AGE` may be `age_secs`. `subject` is the first column when it names the
/// row's own field under another name (`INTERFACE` for `name`).
#[cfg(test)]
pub fn assert_columns_are_fields(columns: &[&str], row: &impl serde::Serialize, subject: &[&str]) {
    fn keys(value: &serde_json::Value, into: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (key, inner) in map {
                into.push(key.clone());
                keys(inner, into);
            }
        }
    }
    let mut fields = Vec::new();
    keys(
        &serde_json::to_value(row).expect("rows serialise"),
        &mut fields,
    );
    for column in columns {
        if subject.contains(column) {
            continue;
        }
        let name = column
            .to_lowercase()
            .replace("/s", "_per_sec")
            .replace(' ', "_");
        assert!(
            fields.contains(&name)
                || fields.contains(&format!("{name}_secs"))
                || fields.contains(&format!("{name}_ms")),
            "column {column:?} is no JSON field ({name}); fields: {fields:?}"
        );
    }
}
