"""A live-updating board: Card rows bound to browsers with channels_fleet.binding.Binding."""
