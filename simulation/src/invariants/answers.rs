//! A query that answers gives the answer of some version of its table.

use super::ANSWERS;
use crate::world::World;

/// `answer` to the `what` query of table `name` must be one of `expected` (one per version
/// of the table whose commit was sent).
pub fn check_answer(
    world: &World,
    name: &str,
    what: &str,
    answer: &[(i64, u64, i64)],
    expected: &[Vec<(i64, u64, i64)>],
) {
    if !expected.iter().any(|e| e.as_slice() == answer) {
        world.violated(
            ANSWERS,
            format!("{what} query of {name} answered {answer:?}, expected one of {expected:?}"),
        );
    }
}
