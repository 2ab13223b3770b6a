//! tend-controllers
