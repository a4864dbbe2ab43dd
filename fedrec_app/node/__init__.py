"""What runs on a SuperNode host: the node's work per message, its state, and its warm trainer."""
