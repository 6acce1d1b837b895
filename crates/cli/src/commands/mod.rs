pub mod deploy;
pub mod invoke;
pub mod logs;
pub mod ls;
pub mod rm;
pub mod rollback;
pub mod up;
pub mod versions;
