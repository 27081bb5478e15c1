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
