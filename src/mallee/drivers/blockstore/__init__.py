"""Block-store drivers: where the Storage Controller keeps volumes and how nodes reach them."""
