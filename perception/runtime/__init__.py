"""perception.runtime"""
