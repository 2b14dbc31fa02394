"""Time-slot offers and bookings: "when can I run this?"."""
