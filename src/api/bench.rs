//! `tend bench api`.
