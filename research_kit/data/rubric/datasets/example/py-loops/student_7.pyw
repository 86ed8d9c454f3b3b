# Ask which table the user wants
table_number = int(input("Which times table would you like? "))
running_total = 0

# Print each row of the table and keep a running total
for multiplier in range(1, 11):
    product = table_number * multiplier
    print(f"{table_number} x {multiplier} = {product}")
    running_total += product

# Show the total of all ten products
print(f"The products add up to {running_total}")
