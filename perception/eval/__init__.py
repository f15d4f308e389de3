"""perception.eval"""
