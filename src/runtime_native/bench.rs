//! `tend bench container`.
