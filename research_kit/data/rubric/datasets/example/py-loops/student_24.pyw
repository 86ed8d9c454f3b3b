# Prints the times table for a number the user chooses.


def print_row(table_number, multiplier):
    """Print one row, such as 7 x 3 = 21."""
    print(f"{table_number} x {multiplier} = {table_number * multiplier}")


table_number = int(input("Which times table? "))

# Rows 1 to 10
for multiplier in range(1, 11):
    print_row(table_number, multiplier)
