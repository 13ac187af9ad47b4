//! What the command line's flags share, beneath the modules that read them.

use clap::ValueEnum;

/// A flag's value, as the setting reads it.
pub(crate) fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .expect("no value is skipped")
        .get_name()
        .to_owned()
}
