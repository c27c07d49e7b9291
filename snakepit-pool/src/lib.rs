//! A supervised pool of snakepit Python workers.
