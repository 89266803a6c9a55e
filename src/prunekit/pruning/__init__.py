"""Pruning: allocation, surgery, masks, schedules, sensitivity and depth pruning."""
