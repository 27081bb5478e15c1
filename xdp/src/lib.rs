//! XDP steering program and loader.
